// Tests of coproc::process across real processes: exit codes, exceptions,
// signals, terminate/kill, join from a coroutine and its cancellation, death
// with the parent, fds and zombies.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <coproc/executors/process.hpp>
#include <cstring>
#include <filesystem>
#include <string>

#include "async_test.hpp"

namespace {

std::size_t count_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

struct test_pipe {
  int rd = -1;
  int wr = -1;
  test_pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    rd = fds[0];
    wr = fds[1];
  }
  ~test_pipe() {
    ::close(rd);
    ::close(wr);
  }
};

void write_sum(int fd, int a, std::string s) {
  std::string out = std::to_string(a + 1) + s;
  if (::write(fd, out.data(), out.size()) < 0) {
    ::_exit(9);
  }
}

void exit_with(int code) {
  ::_exit(code);
}

void throw_runtime_error(std::string what) {
  throw std::runtime_error(what);
}

void block_on(int fd) {
  char c;
  while (::read(fd, &c, 1) > 0) {
  }
}

void crash() {
  ::raise(SIGSEGV);
}

std::string read_all(int fd) {
  std::string out;
  char buf[256];
  ssize_t r;
  while ((r = ::read(fd, buf, sizeof buf)) > 0) {
    out.append(buf, static_cast<std::size_t>(r));
  }
  return out;
}

}  // namespace

TEST_CASE("a process runs fn(args...) and exits 0", "[process]") {
  test_pipe p;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process proc(ctx.get_executor(), write_sum, p.wr, 41, "!");
    CHECK(proc.pid() == -1);
    CHECK(!proc.exit_code());
    proc.start();
    CHECK(proc.pid() > 0);
    auto st = co_await proc.async_join(asio::use_awaitable);
    CHECK(st.success());
    CHECK(proc.exit_code() == 0);
    CHECK(!proc.is_alive());
    char buf[8] = {};
    CHECK(::read(p.rd, buf, sizeof buf) == 3);
    CHECK(std::string(buf) == "42!");
  });
}

TEST_CASE("exit codes, signals and lambdas", "[process]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process a(ctx.get_executor(), exit_with, 3);
    a.start();
    auto sa = co_await a.async_join(asio::use_awaitable);
    CHECK(sa.code == 3);
    CHECK(a.exit_code() == 3);

    coproc::process b(ctx.get_executor(), crash);
    b.start();
    auto sb = co_await b.async_join(asio::use_awaitable);
    CHECK(sb.signal == SIGSEGV);
    CHECK(b.exit_code() == -SIGSEGV);

    coproc::process c(
        ctx.get_executor(), [](int x) { ::_exit(x * 2); }, 21);
    c.start();
    auto sc = co_await c.async_join(asio::use_awaitable);
    CHECK(sc.code == 42);
  });
}

TEST_CASE("an exception in the child: exit code 1 and its text on stderr", "[process]") {
  test_pipe err;
  int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process proc(ctx.get_executor(), throw_runtime_error, std::string("boom 17"));
    ::dup2(err.wr, STDERR_FILENO);  // the child inherits the pipe as its stderr
    proc.start();
    ::dup2(saved, STDERR_FILENO);
    auto st = co_await proc.async_join(asio::use_awaitable);
    CHECK(st.code == 1);
    CHECK(proc.exit_code() == 1);
  });
  ::close(saved);
  ::close(err.wr);
  err.wr = -1;
  std::string text = read_all(err.rd);
  CHECK(text.find("std::runtime_error: boom 17") != std::string::npos);
  CHECK(text.find("uncaught exception") != std::string::npos);
}

TEST_CASE("terminate and kill give negative exit codes", "[process]") {
  test_pipe p;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process t(ctx.get_executor(), block_on, p.rd);
    coproc::process k(ctx.get_executor(), block_on, p.rd);
    t.start();
    k.start();
    CHECK(t.is_alive());
    CHECK(!t.exit_code());
    t.terminate();
    k.kill();
    auto st = co_await t.async_join(asio::use_awaitable);
    auto sk = co_await k.async_join(asio::use_awaitable);
    CHECK(st.signal == SIGTERM);
    CHECK(t.exit_code() == -SIGTERM);
    CHECK(sk.signal == SIGKILL);
    CHECK(k.exit_code() == -SIGKILL);
    t.kill();  // no-op once reaped
  });
}

TEST_CASE("a cancelled join leaves the child running", "[process]") {
  test_pipe p;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    coproc::process proc(ctx.get_executor(), block_on, p.rd);
    proc.start();
    asio::steady_timer timer(ctx, std::chrono::milliseconds(20));
    auto r =
        co_await (proc.async_join(asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);
    CHECK(proc.is_alive());
    CHECK(!proc.exit_code());
    proc.kill();
    auto st = co_await proc.async_join(asio::use_awaitable);
    CHECK(st.signal == SIGKILL);
  });
}

TEST_CASE("a child dies with its parent", "[process]") {
  test_pipe report;  // the intermediate parent writes its child's pid here
  test_pipe hold;    // never written: keeps everyone blocked
  pid_t parent = ::fork();
  REQUIRE(parent >= 0);
  if (parent == 0) {
    asio::io_context ctx;
    coproc::process proc(ctx.get_executor(), block_on, hold.rd);
    proc.start();
    pid_t child = proc.pid();
    if (::write(report.wr, &child, sizeof child) != sizeof child) {
      ::_exit(2);
    }
    block_on(hold.rd);
    ::_exit(0);
  }
  pid_t child = -1;
  REQUIRE(::read(report.rd, &child, sizeof child) == sizeof child);
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
  REQUIRE(pidfd >= 0);
  ::kill(parent, SIGKILL);
  REQUIRE(::waitpid(parent, nullptr, 0) == parent);
  pollfd pfd{pidfd, POLLIN, 0};
  CHECK(::poll(&pfd, 1, 1000) == 1);  // gone within 1 s
  ::close(pidfd);
}

TEST_CASE("destroying an unjoined process kills and reaps it; no fd leaks", "[process]") {
  test_pipe p;
  std::size_t before = count_fds();
  pid_t pid = -1;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process proc(ctx.get_executor(), block_on, p.rd);
    proc.start();
    pid = proc.pid();
    co_return;
  });
  CHECK(count_fds() == before);
  CHECK(::kill(pid, 0) == -1);  // reaped: no zombie with this pid
}
