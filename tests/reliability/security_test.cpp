// Security: shared memory only through memfds (nothing in /dev/shm), every fd
// close-on-exec (in the parent and in the workers, and an exec'd child sees
// none of them), worker rlimits from pool_options, no world-writable memfd.

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/lock.hpp"
#include "coproc/ipc/pipe.hpp"
#include "coproc/ipc/queue.hpp"
#include "coproc/ipc/shared_memory.hpp"
#include "coproc/runtime/pipe_reader.hpp"
#include "reliability_support.hpp"

namespace {

using coproc::process_pool;

/// Names in /dev/shm (empty when it does not exist).
std::set<std::string> dev_shm_names() {
  std::set<std::string> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
    out.insert(e.path().filename().string());
  }
  return out;
}

std::string fd_target(int fd) {
  std::error_code ec;
  auto target = std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), ec);
  return ec ? std::string("?") : target.string();
}

/// fds of this process that survive exec (no FD_CLOEXEC).
std::set<int> inheritable_fds() {
  std::set<int> out;
  for (int fd : coproc::test::fd_set()) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC) == 0) {
      out.insert(fd);
    }
  }
  return out;
}

/// Runs in a worker: its fds above 2 that would survive an exec.
std::vector<int> worker_inheritable_fds() {
  std::vector<int> out;
  for (int fd : inheritable_fds()) {
    if (fd > 2) {
      out.push_back(fd);
    }
  }
  return out;
}

int answer() {
  return 42;
}

int spin_forever() {
  for (;;) {
    asm volatile("" ::: "memory");
  }
}

/// Execs /bin/ls -1 /proc/self/fd with its stdout on a pipe; returns the fd
/// numbers the exec'd program saw.
std::set<int> fds_seen_by_exec() {
  auto [rd, wr] = coproc::make_pipe();  // O_CLOEXEC: only the dup2'd copy crosses
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(wr.get(), 1);
    const char* argv[] = {"ls", "-1", "/proc/self/fd", nullptr};
    ::execv("/bin/ls", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  wr.reset();
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) {
    text.append(buf, static_cast<std::size_t>(n));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::set<int> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) {
      out.insert(std::stoi(line));
    }
  }
  return out;
}

/// Everything coproc can open, alive together, for the duration of `check`.
template <class Check>
void with_everything_open(Check check) {
  coproc::test::run_async([check](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    int v = co_await pool.submit(answer);  // the zygote and a worker exist now
    REQUIRE(v == 42);
    auto [a, b] = coproc::make_connection_pair(ctx.get_executor());
    a.send(1);
    int got = b.receive<int>();
    REQUIRE(got == 1);
    coproc::queue<int> q;
    q.put(1);
    coproc::shared_memory seg(1 << 16);
    coproc::process_lock lock;
    co_await check(pool);
  });
}

}  // namespace

TEST_CASE("nothing appears in /dev/shm: shared memory is memfd only", "[reliability][security]") {
  auto before = dev_shm_names();
  std::set<std::string> during;
  std::vector<std::string> shm_maps;
  with_everything_open([&](process_pool&) -> asio::awaitable<void> {
    during = dev_shm_names();
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
      if (line.find("/dev/shm") != std::string::npos) {
        shm_maps.push_back(line);
      }
    }
    for (int fd : coproc::test::fd_set()) {
      if (fd_target(fd).rfind("/dev/shm", 0) == 0) {
        shm_maps.push_back(fd_target(fd));
      }
    }
    co_return;
  });
  // Other programs on the machine may use /dev/shm at the same time (the
  // benchmarks' Python peers create sem.mp-* there): only new names count,
  // those of Python's multiprocessing aside, and no mapping or fd of this
  // process may point there (that part is exact).
  std::vector<std::string> added;
  for (const auto& name : during) {
    if (!before.count(name) && name.rfind("sem.mp-", 0) != 0) {
      added.push_back(name);
    }
  }
  for (const auto& name : added) {
    UNSCOPED_INFO("new in /dev/shm: " << name);
  }
  CHECK(added.empty());
  CHECK(shm_maps.empty());
}

namespace {

/// fds opened since `baseline` that would survive an exec, with their targets.
std::vector<std::string> new_inheritable(const std::set<int>& baseline) {
  std::vector<std::string> out;
  for (int fd : inheritable_fds()) {
    if (!baseline.count(fd)) {
      out.push_back(std::to_string(fd) + " -> " + fd_target(fd));
    }
  }
  return out;
}

/// What an exec'd program may see: 0, 1, 2, the fds the test runner handed
/// us without FD_CLOEXEC, and the program's own fd (the lowest free number).
std::set<int> expected_after_exec(const std::set<int>& baseline) {
  std::set<int> expected{0, 1, 2};
  expected.insert(baseline.begin(), baseline.end());
  int own = 0;
  while (expected.count(own)) {
    ++own;
  }
  expected.insert(own);
  return expected;
}

}  // namespace

TEST_CASE("pipes, queues, segments and locks are close-on-exec; an exec'd child sees none",
          "[reliability][security]") {
  std::set<int> baseline = inheritable_fds();  // what the test runner handed us
  std::vector<std::string> leaking;
  std::set<int> exec_saw;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    auto [a, b] = coproc::make_connection_pair(ctx.get_executor());
    a.send(1);
    int got = b.receive<int>();
    REQUIRE(got == 1);
    coproc::queue<int> q;
    q.put(1);
    coproc::shared_memory seg(1 << 16);
    coproc::process_lock lock;
    auto pipe_ends = coproc::make_pipe();
    leaking = new_inheritable(baseline);
    exec_saw = fds_seen_by_exec();
    co_return;
  });
  for (const auto& l : leaking) {
    UNSCOPED_INFO("inheritable: " << l);
  }
  CHECK(leaking.empty());
  CHECK(exec_saw == expected_after_exec(baseline));
}

TEST_CASE("workers hold no inheritable fd of coproc's", "[reliability][security]") {
  std::set<int> baseline = inheritable_fds();
  std::vector<int> in_worker;
  with_everything_open([&](process_pool& pool) -> asio::awaitable<void> {
    in_worker = co_await pool.submit(worker_inheritable_fds);
  });
  // The worker inherited the runner's fds (fork keeps them), nothing else.
  std::vector<int> worker_extra;
  for (int fd : in_worker) {
    if (!baseline.count(fd)) {
      worker_extra.push_back(fd);
    }
  }
  CHECK(worker_extra.empty());
}

TEST_CASE("a process_pool's fds are close-on-exec; an exec'd child sees none",
          "[reliability][security]") {
  // Regression (fixed in a0af2e5; executors/src/process_pool.cpp, constructor):
  // the doorbell eventfd is handed to asio::posix::stream_descriptor as
  // ::dup(doorbell_fd_), and dup() clears FD_CLOEXEC, so every program the
  // host execs inherits the pool's doorbell. Fix: fcntl(fd, F_DUPFD_CLOEXEC, 0).
  std::set<int> baseline = inheritable_fds();
  std::vector<std::string> leaking;
  std::set<int> exec_saw;
  with_everything_open([&](process_pool&) -> asio::awaitable<void> {
    leaking = new_inheritable(baseline);
    exec_saw = fds_seen_by_exec();
    co_return;
  });
  for (const auto& l : leaking) {
    UNSCOPED_INFO("inheritable: " << l);
  }
  CHECK(leaking.empty());
  CHECK(exec_saw == expected_after_exec(baseline));
}

TEST_CASE("memfds are not world-writable", "[reliability][security]") {
  // memfd_create gives mode 0777 (the kernel's default for shmem inodes); a
  // process that can open /proc/PID/fd/N could then open it for writing.
  // Regression (fixed in a0af2e5, runtime/src/mapped_region.cpp): fchmod(fd,
  // 0600) right after memfd_create.
  std::vector<std::string> writable;
  std::size_t memfds = 0;
  with_everything_open([&](process_pool&) -> asio::awaitable<void> {
    for (int fd : coproc::test::fd_set()) {
      std::string target = fd_target(fd);
      if (target.rfind("/memfd:", 0) != 0) {
        continue;
      }
      ++memfds;
      struct stat st {};
      if (::fstat(fd, &st) == 0 && (st.st_mode & S_IWOTH) != 0) {
        char mode[16];
        std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
        writable.push_back(target + " mode " + mode);
      }
    }
    co_return;
  });
  INFO("memfds found: " << memfds);
  CHECK(memfds >= 3);  // the pool's, the queue's, the segment's (the lock's)
  for (const auto& w : writable) {
    UNSCOPED_INFO(w);
  }
  CHECK(writable.empty());
}

TEST_CASE("a task past limits.cpu_seconds fails with worker_crashed (SIGXCPU or SIGKILL)",
          "[reliability][security]") {
  coproc::test::run_async(
      [](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(), {.workers = 1, .limits = {.cpu_seconds = 1}});
        std::string what;
        try {
          co_await pool.submit(spin_forever);
          FAIL("a task spinning forever returned");
        } catch (const std::system_error& e) {
          CHECK(e.code() == coproc::errc::worker_crashed);
          what = e.what();
        }
        INFO(what);
        bool named = what.find("signal 24") != std::string::npos ||
                     what.find("signal 9") != std::string::npos;
        CHECK(named);
        // The replacement worker gets a fresh CPU budget.
        int v = co_await pool.submit(answer);
        CHECK(v == 42);
      },
      std::chrono::seconds(20));
}
