// Tests of the backend choice of uring_service: the option, the environment
// variable, their precedence, the automatic fallback, and one pipe round trip
// and one futex wake on each backend. The suite runs once as is and once under
// tests/launcher/no_uring (io_uring refused by seccomp), so each expectation
// here depends on whether this process may create a ring.

#include <fcntl.h>
#include <liburing.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <cerrno>
#include <chrono>
#include <coproc/runtime/child_process.hpp>
#include <coproc/runtime/detail/futex.hpp>
#include <coproc/runtime/errc.hpp>
#include <coproc/runtime/futex_waiter.hpp>
#include <coproc/runtime/io_backend.hpp>
#include <coproc/runtime/mapped_region.hpp>
#include <coproc/runtime/pipe_reader.hpp>
#include <coproc/runtime/pipe_writer.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <cstdio>
#include <new>
#include <optional>
#include <string>

#include "async_test.hpp"

namespace {

// Asks the kernel directly, as the service's probe does first.
bool ring_allowed() {
  io_uring ring{};
  if (io_uring_queue_init(4, &ring, 0) < 0) {
    return false;
  }
  io_uring_queue_exit(&ring);
  return true;
}

// Sets (or unsets, for nullopt) COPROC_IO_BACKEND for one scope.
class scoped_env {
 public:
  explicit scoped_env(std::optional<std::string> value) {
    if (const char* old = ::getenv("COPROC_IO_BACKEND")) {
      old_ = old;
    }
    if (value) {
      ::setenv("COPROC_IO_BACKEND", value->c_str(), 1);
    } else {
      ::unsetenv("COPROC_IO_BACKEND");
    }
  }
  ~scoped_env() {
    if (old_) {
      ::setenv("COPROC_IO_BACKEND", old_->c_str(), 1);
    } else {
      ::unsetenv("COPROC_IO_BACKEND");
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  std::optional<std::string> old_;
};

coproc::io_backend expected_automatic() {
  return ring_allowed() ? coproc::io_backend::uring : coproc::io_backend::epoll;
}

}  // namespace

TEST_CASE("the option chooses the backend and wins over the variable", "[io_backend]") {
  scoped_env env("uring");
  asio::io_context ctx;
  auto& service = coproc::uring_service::install(ctx, {.backend = coproc::io_backend::epoll});
  CHECK(service.backend() == coproc::io_backend::epoll);
  CHECK_FALSE(service.has_futex_wait());
  CHECK_FALSE(service.has_waitid());
  CHECK(service.fallback_reason() == "io_backend::epoll was asked for");
}

TEST_CASE("the variable chooses the backend when the option is unset", "[io_backend]") {
  SECTION("epoll") {
    scoped_env env("epoll");
    asio::io_context ctx;
    CHECK(coproc::uring_service::of(ctx.get_executor()).backend() == coproc::io_backend::epoll);
  }
  SECTION("auto") {
    scoped_env env("auto");
    asio::io_context ctx;
    CHECK(coproc::uring_service::of(ctx.get_executor()).backend() == expected_automatic());
  }
  SECTION("unset") {
    scoped_env env(std::nullopt);
    asio::io_context ctx;
    CHECK(coproc::uring_service::of(ctx.get_executor()).backend() == expected_automatic());
  }
  SECTION("anything else is refused, naming the variable") {
    scoped_env env("io_uring");
    asio::io_context ctx;
    try {
      coproc::uring_service::of(ctx.get_executor());
      FAIL("COPROC_IO_BACKEND=io_uring was accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find("COPROC_IO_BACKEND") != std::string::npos);
    }
  }
}

TEST_CASE("forcing io_uring works where it is allowed and throws where it is refused",
          "[io_backend]") {
  bool through_variable = GENERATE(false, true);
  scoped_env env(through_variable ? std::optional<std::string>("uring") : std::nullopt);
  asio::io_context ctx;
  coproc::uring_options options;
  if (!through_variable) {
    options.backend = coproc::io_backend::uring;
  }
  if (ring_allowed()) {
    CHECK(coproc::uring_service::install(ctx, options).backend() == coproc::io_backend::uring);
    return;
  }
  try {
    coproc::uring_service::install(ctx, options);
    FAIL("a refused ring did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::uring_unavailable);
    CHECK(std::string(e.what()).find("io_uring_setup") != std::string::npos);
  }
}

TEST_CASE("automatic falls back to epoll and says why", "[io_backend]") {
  scoped_env env(std::nullopt);
  asio::io_context ctx;
  auto& service = coproc::uring_service::of(ctx.get_executor());
  if (ring_allowed()) {
    CHECK(service.backend() == coproc::io_backend::uring);
    CHECK(service.fallback_reason().empty());
  } else {
    CHECK(service.backend() == coproc::io_backend::epoll);
    CHECK(service.fallback_reason().find("io_uring_setup") != std::string::npos);
  }
}

TEST_CASE("a pipe round trip and a futex wake on each backend", "[io_backend]") {
  auto backend = GENERATE(coproc::io_backend::uring, coproc::io_backend::epoll);
  if (backend == coproc::io_backend::uring && !ring_allowed()) {
    SUCCEED("io_uring is refused here: only the epoll backend can run");
    return;
  }
  auto region = coproc::mapped_region::create(4096);
  auto& word = *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(region.data()));
  word.store(0);
  auto to_child = coproc::make_pipe();
  auto from_child = coproc::make_pipe();
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::uring_service::install(ctx, {.backend = backend});
    // The child echoes one byte, then sets the word and wakes it.
    auto child = coproc::child_process::fork_child([&] {
      char c = 0;
      if (::read(std::get<0>(to_child).get(), &c, 1) != 1 ||
          ::write(std::get<1>(from_child).get(), &c, 1) != 1) {
        ::_exit(1);
      }
      word.store(1);
      coproc::detail::futex_wake(word, 1);
      ::_exit(0);
    });
    coproc::pipe_writer w(ctx.get_executor(), std::move(std::get<1>(to_child)));
    coproc::pipe_reader r(ctx.get_executor(), std::move(std::get<0>(from_child)));
    std::get<1>(from_child).reset();
    char out = 'x';
    char in = 0;
    co_await asio::async_write(w, asio::buffer(&out, 1), asio::use_awaitable);
    co_await asio::async_read(r, asio::buffer(&in, 1), asio::use_awaitable);
    CHECK(in == 'x');
    while (word.load() == 0) {
      co_await coproc::async_futex_wait(ctx.get_executor(), word, 0, asio::use_awaitable);
    }
    auto status = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
    CHECK(status.exited);
    CHECK(status.code == 0);
  });
}

TEST_CASE("waiting on the epoll backend leaves the fd blocking for its other users",
          "[io_backend]") {
  // Regression: Asio sets O_NONBLOCK on every descriptor it waits on, and the
  // flag belongs to the open file, which a child or a blocking reader shares.
  // A first version registered duplicates of the fds with Asio: a blocking
  // send on the same socket then failed with EAGAIN.
  auto ends = coproc::make_pipe();
  int read_fd = std::get<0>(ends).get();
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::uring_service::install(ctx, {.backend = coproc::io_backend::epoll});
    coproc::pipe_reader r(ctx.get_executor(), std::move(std::get<0>(ends)));
    asio::steady_timer t(ctx, std::chrono::milliseconds(5));
    char c = 0;
    using namespace asio::experimental::awaitable_operators;
    // The read waits (nothing was written), then the timer withdraws it.
    auto which = co_await (r.async_read_some(asio::buffer(&c, 1), asio::use_awaitable) ||
                           t.async_wait(asio::use_awaitable));
    CHECK(which.index() == 1);
    CHECK((::fcntl(read_fd, F_GETFL) & O_NONBLOCK) == 0);
    r.release().release();  // the test still owns read_fd's number
  });
  ::close(read_fd);
}

TEST_CASE("a cancelled wait leaves no work behind: run() returns", "[io_backend]") {
  // Regression: the epoll backend's wait on its interest set stayed armed
  // after its last op was cancelled, so io_context::run() never returned
  // (the pool's rest cancels its report read; quick_tour hung).
  auto backend = GENERATE(coproc::io_backend::uring, coproc::io_backend::epoll);
  if (backend == coproc::io_backend::uring && !ring_allowed()) {
    SUCCEED("io_uring is refused here: only the epoll backend can run");
    return;
  }
  auto ends = coproc::make_pipe();
  asio::io_context ctx;
  coproc::uring_service::install(ctx, {.backend = backend});
  coproc::pipe_reader r(ctx.get_executor(), std::move(std::get<0>(ends)));
  char c = 0;
  std::error_code got;
  r.async_read_some(asio::buffer(&c, 1), [&](std::error_code ec, std::size_t) { got = ec; });
  asio::steady_timer t(ctx, std::chrono::milliseconds(5));
  t.async_wait([&](std::error_code) { r.cancel(); });
  ctx.run_for(std::chrono::seconds(10));
  CHECK(ctx.stopped());  // out of work, not out of time
  CHECK(got == asio::error::operation_aborted);
}

TEST_CASE("a pipe_writer whose reader is gone gets EPIPE, never SIGPIPE", "[io_backend]") {
  // Regression: pipe_writer wrote with the ring's WRITE, which queues SIGPIPE
  // for the thread running it: a host with SIGPIPE's default action died.
  auto backend = GENERATE(coproc::io_backend::uring, coproc::io_backend::epoll);
  if (backend == coproc::io_backend::uring && !ring_allowed()) {
    SUCCEED("io_uring is refused here: only the epoll backend can run");
    return;
  }
  // The write runs in a child with SIGPIPE at its default action, so a
  // SIGPIPE kills that child, not the test.
  auto child = coproc::child_process::fork_child([backend]() -> int {
    ::signal(SIGPIPE, SIG_DFL);
    auto ends = coproc::make_pipe();
    std::get<0>(ends).reset();  // no reader
    asio::io_context ctx;
    coproc::uring_service::install(ctx, {.backend = backend});
    coproc::pipe_writer w(ctx.get_executor(), std::move(std::get<1>(ends)));
    char byte = 'x';
    std::error_code got;
    w.async_write_some(asio::buffer(&byte, 1), [&](std::error_code ec, std::size_t) { got = ec; });
    ctx.run();
    if (got.value() != EPIPE) {
      std::fprintf(stderr, "pipe_writer gave: %s\n", got.message().c_str());
      return 3;
    }
    return 0;
  });
  asio::io_context ctx;
  std::optional<coproc::exit_status> status;
  child.async_wait_exit(ctx.get_executor(),
                        [&](std::error_code, coproc::exit_status s) { status = s; });
  ctx.run();
  REQUIRE(status);
  INFO(status->describe());
  CHECK(status->exited);
  CHECK(status->code == 0);
}

TEST_CASE("a forked child that destroys an inherited io_context leaves the parent's ops alone",
          "[io_backend]") {
  // A daemonizing host's other half, or a plain fork() child that returns
  // from main: its copy of the service shares the ring, Asio's epoll
  // instance and the interest set with the parent, and has none of the
  // parent's threads.
  auto backend = GENERATE(coproc::io_backend::uring, coproc::io_backend::epoll);
  if (backend == coproc::io_backend::uring && !ring_allowed()) {
    SUCCEED("io_uring is refused here: only the epoll backend can run");
    return;
  }
  auto region = coproc::mapped_region::create(4096);
  auto& word = *::new (region.data()) std::atomic<std::uint32_t>(0);
  auto [r, w] = coproc::make_pipe();
  std::optional<asio::io_context> ctx(std::in_place);
  coproc::uring_service::install(*ctx, {.backend = backend});
  std::optional<coproc::pipe_reader> reader(std::in_place, ctx->get_executor(), std::move(r));
  char buf[8] = {};
  std::error_code read_ec = asio::error::would_block;
  std::size_t got = 0;
  reader->async_read_some(asio::buffer(buf), [&](std::error_code ec, std::size_t n) {
    read_ec = ec;
    got = n;
  });
  std::error_code futex_ec = asio::error::would_block;
  coproc::async_futex_wait(ctx->get_executor(), word, 0,
                           [&](std::error_code ec) { futex_ec = ec; });
  ctx->poll();  // both ops wait: in the ring, or in the interest set and on the watcher
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(5);  // a hang (joining a watcher thread only the parent has) ends as SIGALRM
    reader.reset();
    ctx.reset();
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK((WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status)) == 0);
  REQUIRE(::write(w.get(), "x", 1) == 1);
  word.store(1);
  coproc::detail::futex_wake(word, 1);
  ctx->run_for(std::chrono::seconds(5));
  CHECK(read_ec == std::error_code());
  CHECK(got == 1);
  CHECK(futex_ec == std::error_code());
}
