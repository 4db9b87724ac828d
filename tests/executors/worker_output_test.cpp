// A worker's stdio output is not lost when stdout is not a terminal (issue 14 item 10):
// what a task printed is flushed before its result is published, so a pool destroyed
// right after (its workers SIGKILLed) loses nothing. pool_options::worker_output
// passes each worker's lines on prefixed with its pid, or to a callback: whole lines,
// nothing lost when the worker ends (even by a kill), no hang on a flood.
#include <fcntl.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "async_test.hpp"
#include "coproc/coproc.hpp"
#include "poll_until.hpp"

namespace {

int print_marker(int n) {
  std::printf("worker-output-marker-%d", n);  // no newline: stays in the buffer
  return n;
}

int print_lines(int n) {
  for (int i = 0; i < n; ++i) {
    std::printf("line %d of %d\n", i, n);
  }
  std::fprintf(stderr, "to stderr\n");
  std::fflush(nullptr);
  return static_cast<int>(::getpid());
}

// One line written in three pieces, with pauses: passed on whole.
int print_in_pieces() {
  for (const char* piece : {"abc", "def", "ghi\n"}) {
    ::write(STDOUT_FILENO, piece, std::strlen(piece));
    ::usleep(20'000);
  }
  return static_cast<int>(::getpid());
}

// Flushed output, then a kill: the lines are in the pipe and still arrive.
int print_then_die() {
  std::printf("last words\n");
  std::printf("no newline at the end");
  std::fflush(stdout);
  ::raise(SIGKILL);
  return 0;
}

// 8 MiB, far beyond a pipe's buffer, in 1 KiB lines.
int flood() {
  std::string line(1023, 'x');
  line.push_back('\n');
  for (int i = 0; i < 8 * 1024; ++i) {
    ::write(STDOUT_FILENO, line.data(), line.size());
  }
  return static_cast<int>(::getpid());
}

struct captured {
  int pid = 0;
  int stream = 0;
  std::string line;
};
using captured_lines = std::shared_ptr<std::vector<captured>>;

// `options` with every worker line routed into `lines` (on the loop).
coproc::pool_options capture_into(const captured_lines& lines, coproc::pool_options options) {
  options.worker_output = coproc::worker_output::callback;
  options.on_worker_output = [lines](int pid, int stream, std::string_view line) {
    lines->push_back({pid, stream, std::string(line)});
  };
  return options;
}

// Lines come on the loop while the pool runs: waits (at most 5 s) for `n`.
asio::awaitable<void> wait_for_lines(const captured_lines& lines, std::size_t n) {
  return coproc::test::poll_until([lines, n] { return lines->size() >= n; },
                                  std::chrono::milliseconds(10), 500);
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t r;
  while ((r = ::read(fd, buf, sizeof buf)) > 0) {
    out.append(buf, static_cast<std::size_t>(r));
  }
  return out;
}

// In order within a stream; stdout and stderr are two pipes, so the order
// between them is not kept. (Outside the coroutine: GCC 12 reports a false
// mismatched-new-delete on asio's frame when this is inside it.)
void check_lines(const std::vector<captured>& lines, int pid) {
  std::vector<std::string> out;
  std::vector<std::string> err;
  for (const captured& c : lines) {
    CHECK(c.pid == pid);
    (c.stream == 1 ? out : err).push_back(c.line);
  }
  REQUIRE(out.size() == 101);
  for (int i = 0; i < 100; ++i) {
    CHECK(out[static_cast<std::size_t>(i)] == "line " + std::to_string(i) + " of 100");
  }
  CHECK(out[100] == "abcdefghi");  // three writes, one line
  REQUIRE(err.size() == 1);
  CHECK(err[0] == "to stderr");
}

}  // namespace

TEST_CASE("a task's buffered stdout survives the pool's destruction", "[process_pool][stdio]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::fflush(stdout);
  int saved = ::dup(STDOUT_FILENO);
  REQUIRE(saved >= 0);
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    ::dup2(fds[1], STDOUT_FILENO);  // the zygote and its workers inherit the pipe
    auto pool = std::make_unique<coproc::process_pool>(ctx, coproc::pool_options{.workers = 1});
    ::dup2(saved, STDOUT_FILENO);
    int v = co_await pool->submit(print_marker, 41);
    CHECK(v == 41);
    pool.reset();  // kills the worker at once
  });
  ::close(saved);
  ::close(fds[1]);
  std::string text = read_all(fds[0]);
  ::close(fds[0]);
  CHECK(text.find("worker-output-marker-41") != std::string::npos);
}

TEST_CASE("worker_output::callback passes whole lines with the worker's pid",
          "[process_pool][stdio]") {
  auto lines = std::make_shared<std::vector<captured>>();
  coproc::test::run_async([lines](asio::io_context& ctx) -> asio::awaitable<void> {
    {
      coproc::process_pool pool(ctx, capture_into(lines, {.workers = 1}));
      int pid = co_await pool.submit(print_lines, 100);
      int pid2 = co_await pool.submit(print_in_pieces);
      CHECK(pid2 == pid);
      co_await wait_for_lines(lines, 102);
      REQUIRE(lines->size() == 102);
      check_lines(*lines, pid);
    }
  });
}

TEST_CASE("worker_output: a killed worker's flushed lines arrive, the last one unterminated",
          "[process_pool][stdio]") {
  auto lines = std::make_shared<std::vector<captured>>();
  coproc::test::run_async([lines](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, capture_into(lines, {.workers = 1}));
    try {
      co_await pool.submit(print_then_die);
    } catch (const std::system_error&) {
    }
    co_await wait_for_lines(lines, 2);
    REQUIRE(lines->size() == 2);
    CHECK(lines->at(0).line == "last words");
    CHECK(lines->at(1).line == "no newline at the end");
    CHECK(lines->at(0).pid == lines->at(1).pid);
  });
}

TEST_CASE("worker_output: 8 MiB from a worker neither hangs nor loses a line",
          "[process_pool][stdio]") {
  auto count = std::make_shared<std::size_t>(0);
  auto bytes = std::make_shared<std::size_t>(0);
  coproc::test::run_async(
      [count, bytes](asio::io_context& ctx) -> asio::awaitable<void> {
        coproc::process_pool pool(
            ctx, {.workers = 1,
                  .worker_output = coproc::worker_output::callback,
                  .on_worker_output = [count, bytes](int, int, std::string_view line) {
                    ++*count;
                    *bytes += line.size();
                  }});
        co_await pool.submit(flood);
        asio::steady_timer t(ctx);
        for (int i = 0; i < 1000 && *count < 8 * 1024; ++i) {
          t.expires_after(std::chrono::milliseconds(10));
          co_await t.async_wait(asio::use_awaitable);
        }
      },
      std::chrono::seconds(60));
  CHECK(*count == 8 * 1024);
  CHECK(*bytes == std::size_t{8} * 1024 * 1023);
}

TEST_CASE("worker_output::prefix_pid writes '[worker PID] line' to the host's stdout",
          "[process_pool][stdio]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::fflush(stdout);
  int saved = ::dup(STDOUT_FILENO);
  REQUIRE(saved >= 0);
  int pid = 0;
  // The relay writes to the host's fd 1: point it at the pipe for the test.
  ::dup2(fds[1], STDOUT_FILENO);
  try {
    coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
      coproc::process_pool pool(ctx,
                                {.workers = 1, .worker_output = coproc::worker_output::prefix_pid});
      pid = co_await pool.submit(print_lines, 3);
      // Recycled at destruction: the relay passes on what the pipes still hold.
    });
  } catch (...) {
    ::dup2(saved, STDOUT_FILENO);
    throw;
  }
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(fds[1]);
  std::string text = read_all(fds[0]);
  ::close(fds[0]);
  std::string p = "[worker " + std::to_string(pid) + "] ";
  CHECK(text == p + "line 0 of 3\n" + p + "line 1 of 3\n" + p + "line 2 of 3\n");
}

TEST_CASE("worker_output::callback works for spawned zygotes too", "[process_pool][stdio]") {
  auto lines = std::make_shared<std::vector<captured>>();
  coproc::test::run_async([lines](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(
        ctx, capture_into(lines, {.workers = 1, .start_method = coproc::start_method::spawn}));
    int pid = co_await pool.submit(print_in_pieces);
    co_await wait_for_lines(lines, 1);
    REQUIRE(lines->size() == 1);
    CHECK(lines->at(0).pid == pid);
    CHECK(lines->at(0).line == "abcdefghi");
  });
}
