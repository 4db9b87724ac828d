// process_pool with start_method::spawn: the zygote is an exec of this very
// test binary, configured before main through the COPROC_ZYGOTE marker.

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "async_test.hpp"
#include "busy_pool_owner.hpp"
#include "coproc/executors/detail/pool_layout.hpp"
#include "coproc/executors/detail/zygote.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/mapped_region.hpp"
#include "coproc/runtime/pipe_reader.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "proc_stat.hpp"

namespace {

using coproc::process_pool;
using coproc::start_method;

// Constant-initialized, then changed by the tests: a forked zygote would see
// the change, an exec'd one sees the image's initial value.
int g_mark = 1;
// Dynamically initialized: proves the spawned zygote ran the program's static
// initializers before it forked the workers.
const std::string g_table = std::string(5, 'x') + "yz";
int g_initialized = 0;
// Held by a host thread while the pool starts: a fork would copy it locked.
std::mutex g_host_lock;

int add(int a, int b) {
  return a + b;
}
std::string greet(std::string name) {
  return "hello " + name;
}
int fib(int n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}
int throws_range(int) {
  throw std::out_of_range("index 7 past the end");
}
int my_pid() {
  return static_cast<int>(::getpid());
}
int read_mark() {
  return g_mark;
}
std::size_t table_size() {
  return g_table.size();
}
int read_initialized() {
  return g_initialized;
}
void set_initialized() {
  g_initialized = 42;
}
void init_throws() {
  throw std::runtime_error("no");
}
int take_host_lock() {
  std::lock_guard lock(g_host_lock);
  return 1;
}
int crash_with(int sig) {
  ::raise(sig);
  return 0;
}
int spin_forever() {
  for (;;) {
    asm volatile("" ::: "memory");
  }
}
/// The command name of this process's parent (the zygote, seen from a worker).
std::string parent_comm() {
  std::ifstream in("/proc/" + std::to_string(::getppid()) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

coproc::pool_options spawn_options(std::size_t workers) {
  coproc::pool_options o;
  o.workers = workers;
  o.start_method = start_method::spawn;
  return o;
}

/// Children of this process, and how many of them are zombies.
std::pair<int, int> count_children() {
  int children = 0, zombies = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    coproc::test::proc_stat s = coproc::test::read_stat(std::stoi(name));
    if (!s.state.empty() && s.ppid == ::getpid()) {
      ++children;
      zombies += s.state == "Z";
    }
  }
  return {children, zombies};
}

}  // namespace

TEST_CASE("spawn: submit returns the value from an exec'd image", "[spawn_pool]") {
  g_mark = 2;
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), spawn_options(2));
    {
      auto value = co_await pool.submit(add, 2, 3);
      CHECK(value == 5);
    }
    {
      auto value = co_await pool.submit(greet, "world");
      CHECK(value == "hello world");
    }
    {
      auto value = co_await pool.submit([](int n) { return n * 2; }, 21);
      CHECK(value == 42);
    }
    int pid = co_await pool.submit(my_pid);
    CHECK(pid != ::getpid());
    int mark = co_await pool.submit(read_mark);
    CHECK(mark == 1);  // the image's value, not this process's 2: no fork of this memory
    std::size_t table = co_await pool.submit(table_size);
    CHECK(table == 7);  // static initializers ran in the zygote
    std::string zygote = co_await pool.submit(parent_comm);
    CHECK(zygote == "coproc-zygote");
  });
  g_mark = 1;
}

TEST_CASE("spawn: the fork_server start still forks this memory", "[spawn_pool]") {
  g_mark = 3;
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    int mark = co_await pool.submit(read_mark);
    CHECK(mark == 3);
  });
  g_mark = 1;
}

TEST_CASE("spawn: a task's standard exception arrives as its own type", "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), spawn_options(1));
    try {
      co_await pool.submit(throws_range, 1);
      FAIL("no exception");
    } catch (const std::out_of_range& e) {
      CHECK(std::string(e.what()) == "index 7 past the end");
    }
    auto value = co_await pool.submit(add, 1, 1);
    CHECK(value == 2);
  });
}

TEST_CASE("spawn: map returns results in input order", "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), spawn_options(2));
    std::vector<int> in(200);
    for (int i = 0; i < 200; ++i) {
      in[i] = i % 20;
    }
    std::vector<int> out = co_await pool.map(fib, in);
    REQUIRE(out.size() == in.size());
    bool all = true;
    for (std::size_t i = 0; i < in.size(); ++i) {
      all = all && out[i] == fib(in[i]);
    }
    CHECK(all);
  });
}

TEST_CASE("spawn: a killed worker fails its task and is respawned", "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), spawn_options(2));
    try {
      co_await pool.submit(crash_with, SIGKILL);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::worker_crashed);
      CHECK(std::string(e.what()).find("signal 9") != std::string::npos);
    }
    for (int i = 0; i < 4; ++i) {
      auto value = co_await pool.submit(fib, 20);
      CHECK(value == 6765);
    }
    CHECK(pool.stats().worker_crashes == 1);
    CHECK(pool.stats().respawns == 1);
  });
}

TEST_CASE("spawn: max_tasks_per_worker crosses the exec", "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    auto o = spawn_options(1);
    o.max_tasks_per_worker = 1;
    process_pool pool(ctx.get_executor(), std::move(o));
    int first = co_await pool.submit(my_pid);
    int second = co_await pool.submit(my_pid);
    CHECK(first != second);
  });
}

TEST_CASE("spawn: a function-pointer initializer runs in each worker", "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    auto o = spawn_options(1);
    o.initializer = set_initialized;
    process_pool pool(ctx.get_executor(), std::move(o));
    int seen = co_await pool.submit(read_initialized);
    CHECK(seen == 42);
    CHECK(g_initialized == 0);  // it ran in the worker, not here
  });
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    auto o = spawn_options(1);
    o.initializer = +[] { g_initialized = 7; };  // unary +: a plain function pointer
    process_pool pool(ctx.get_executor(), std::move(o));
    int seen = co_await pool.submit(read_initialized);
    CHECK(seen == 7);
  });
}

TEST_CASE("spawn: an initializer that throws is a clean error", "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    auto o = spawn_options(1);
    o.initializer = init_throws;
    process_pool pool(ctx.get_executor(), std::move(o));
    try {
      co_await pool.submit(add, 1, 2);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::pool_broken);  // an initializer failure breaks the pool
    }
  });
}

TEST_CASE("spawn: an initializer that is not a function pointer is refused", "[spawn_pool]") {
  asio::io_context ctx;
  int value = 5;
  auto capturing = spawn_options(1);
  capturing.initializer = [value] { g_initialized = value; };
  auto children = count_children();
  try {
    process_pool pool(ctx.get_executor(), std::move(capturing));
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("plain function pointer") != std::string::npos);
  }
  auto lambda = spawn_options(1);
  lambda.initializer = [] { g_initialized = 1; };  // a lambda object, not converted
  bool refused = false;
  try {
    process_pool pool(ctx.get_executor(), std::move(lambda));
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused);
  CHECK(count_children() == children);  // refused before any process was started
}

TEST_CASE("spawn: a pool created while the host runs threads works", "[spawn_pool]") {
  // Four threads wait, one of them holding g_host_lock: a zygote forked now
  // would hold that lock forever; an exec'd image has its own, fresh.
  std::mutex m;
  std::condition_variable cv;
  bool release = false;
  int started = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      std::unique_lock<std::mutex> held;
      if (i == 0) {
        held = std::unique_lock(g_host_lock);
      }
      std::unique_lock lock(m);
      ++started;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
    });
  }
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return started == 4; });
  }
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), spawn_options(2));
    std::vector<int> in(3);  // no braced lists in coroutines: g++ 12 rejects them
    in[0] = 10;
    in[1] = 15;
    in[2] = 20;
    std::vector<int> out = co_await pool.map(fib, in);
    REQUIRE(out.size() == 3);
    CHECK(out[0] == 55);
    CHECK(out[1] == 610);
    CHECK(out[2] == 6765);
    int took = co_await pool.submit(take_host_lock);
    CHECK(took == 1);
  });
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  for (auto& t : threads) {
    t.join();
  }
}

TEST_CASE("spawn: destroying the pool leaves no descendant", "[spawn_pool]") {
  auto children = count_children();
  std::vector<pid_t> workers;
  for (int round = 0; round < 3; ++round) {
    coproc::test::run_async([&workers](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), spawn_options(2));
      int pid = co_await pool.submit(my_pid);
      workers.push_back(pid);
    });
  }
  CHECK(count_children() == children);
  for (pid_t p : workers) {
    CHECK(coproc::test::gone_or_zombie(p));
  }
}

TEST_CASE("spawn: a parent killed by SIGKILL leaves no descendant", "[spawn_pool]") {
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto rd_wr_ends = coproc::make_pipe();
  [[maybe_unused]] auto& rd = std::get<0>(rd_wr_ends);
  [[maybe_unused]] auto& wr = std::get<1>(rd_wr_ends);
  pid_t owner = ::fork();
  if (owner == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a test run that was killed
    rd.reset();
    asio::io_context ctx;
    process_pool pool(ctx.get_executor(), spawn_options(2));
    coproc::test::report_busy_workers(ctx, pool, spin_forever, wr.get());
  }
  wr.reset();
  std::vector<pid_t> pids(8, -1);
  pollfd ready{rd.get(), POLLIN, 0};
  if (::poll(&ready, 1, 20'000) != 1) {
    ::kill(owner, SIGKILL);
    ::waitpid(owner, nullptr, 0);
    FAIL("the pool's owner did not report its workers within 20 s");
  }
  ssize_t n = ::read(rd.get(), pids.data(), pids.size() * sizeof(pid_t));
  ::kill(owner, SIGKILL);
  ::waitpid(owner, nullptr, 0);
  REQUIRE(n >= static_cast<ssize_t>(3 * sizeof(pid_t)));
  pids.resize(static_cast<std::size_t>(n) / sizeof(pid_t) - 1);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  bool all_gone = false;
  while (!all_gone && std::chrono::steady_clock::now() < deadline) {
    all_gone = true;
    for (pid_t p : pids) {
      all_gone = all_gone && coproc::test::gone_or_zombie(p);
    }
    if (!all_gone) {
      std::this_thread::yield();
    }
  }
  CHECK(all_gone);
}

namespace {

/// Starts this test binary as a spawned zygote would be started: the
/// marker naming `wire_fd`, and `inherit` (with it) kept open across exec.
pid_t start_image(int wire_fd, std::vector<int> inherit, const char* arg) {
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  inherit.push_back(wire_fd);
  for (int fd : inherit) {
    ::posix_spawn_file_actions_adddup2(&fa, fd, fd);
  }
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ::posix_spawn_file_actions_adddup2(&fa, devnull, 1);
  std::string marker = std::string(coproc::detail::spawn_marker) + "=" + std::to_string(wire_fd);
  std::string name = "spawn_pool_test";
  std::string argument = arg;
  char* argv[] = {name.data(), argument.data(), nullptr};
  char* envp[] = {marker.data(), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv, envp);
  ::posix_spawn_file_actions_destroy(&fa);
  ::close(devnull);
  return rc == 0 ? pid : -1;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("spawn: an image started with a bogus marker leaves before main", "[spawn_pool]") {
  auto ends = coproc::make_pipe();
  auto& rd = std::get<0>(ends);
  auto& wr = std::get<1>(ends);
  const char junk[16] = "not a wire";
  REQUIRE(::write(wr.get(), junk, sizeof junk) == static_cast<ssize_t>(sizeof junk));
  wr.reset();
  // Were main to run, Catch2 would list the tests and exit with 0.
  pid_t pid = start_image(rd.get(), {}, "--list-tests");
  REQUIRE(pid > 0);
  CHECK(wait_exit_code(pid) == coproc::detail::worker_exit_bad_image);
}

TEST_CASE("spawn: a zygote whose image differs makes each worker exit bad_image", "[spawn_pool]") {
  namespace d = coproc::detail;
  d::pool_geometry g{1, 65536, 4096};
  auto region = coproc::mapped_region::create(g.total(), "spawn-test");
  auto* header = new (region.data()) d::pool_header;
  header->anchor = 0;
  d::reset_slot(region.data(), g, 0);
  coproc::unique_fd doorbell(::eventfd(0, EFD_CLOEXEC));
  auto cmd = coproc::make_pipe();
  auto report = coproc::make_pipe();
  auto wire_pipe = coproc::make_pipe();
  d::spawn_wire w{};
  w.magic = d::spawn_wire_magic;
  w.parent = ::getpid();
  w.cmd_fd = std::get<0>(cmd).get();
  w.report_fd = std::get<1>(report).get();
  w.doorbell_fd = doorbell.get();
  w.memfd = region.fd();
  w.slots = g.slots;
  w.ring_bytes = g.ring_bytes;
  w.arena_bytes = g.arena_bytes;
  w.image.build_id_len = 4;  // another build: differs from this binary's id
  REQUIRE(::write(std::get<1>(wire_pipe).get(), &w, sizeof w) == static_cast<ssize_t>(sizeof w));
  std::get<1>(wire_pipe).reset();
  pid_t zygote = start_image(std::get<0>(wire_pipe).get(),
                             {w.cmd_fd, w.report_fd, w.doorbell_fd, w.memfd}, "--list-tests");
  REQUIRE(zygote > 0);
  std::get<0>(cmd).reset();
  std::get<1>(report).reset();
  d::zygote_command c{d::zygote_spawn, 0};
  REQUIRE(::write(std::get<1>(cmd).get(), &c, sizeof c) == static_cast<ssize_t>(sizeof c));
  d::zygote_report spawned{}, exited{};
  ssize_t n1 = ::read(std::get<0>(report).get(), &spawned, sizeof spawned);
  ssize_t n2 = ::read(std::get<0>(report).get(), &exited, sizeof exited);
  std::get<1>(cmd).reset();  // EOF: the zygote stops
  int zygote_code = wait_exit_code(zygote);
  REQUIRE(n1 == static_cast<ssize_t>(sizeof spawned));
  CHECK(spawned.kind == d::report_spawned);
  REQUIRE(n2 == static_cast<ssize_t>(sizeof exited));
  CHECK(exited.kind == d::report_exited);
  CHECK(WIFEXITED(exited.wait_status));
  CHECK(WEXITSTATUS(exited.wait_status) == d::worker_exit_bad_image);
  CHECK(header->anchor == 0);  // a zygote of another image leaves the header alone
  CHECK(zygote_code == 0);
}
