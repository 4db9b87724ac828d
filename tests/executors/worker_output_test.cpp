// A worker's stdio output is not lost when stdout is not a terminal (issue 14 item 10):
// what a task printed is flushed before its result is published, so a pool destroyed
// right after (its workers SIGKILLed) loses nothing.
#include <fcntl.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <cstdio>
#include <string>

#include "async_test.hpp"
#include "coproc/coproc.hpp"

namespace {

int print_marker(int n) {
  std::printf("worker-output-marker-%d", n);  // no newline: stays in the buffer
  return n;
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
