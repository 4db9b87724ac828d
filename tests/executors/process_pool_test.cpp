#include "coproc/executors/process_pool.hpp"

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <csignal>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>

#include "async_test.hpp"
#include "coproc/ipc/remote_error.hpp"

namespace {

int add(int a, int b) { return a + b; }
std::string greet(std::string name) { return "hello " + name; }
int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int throws_range(int) { throw std::out_of_range("index 7 past the end"); }
int my_pid() { return static_cast<int>(::getpid()); }
void nothing() {}
int crash_with(int sig) {
  ::raise(sig);
  return 0;
}
int exit_with(int code) { ::_exit(code); }
int spin_forever() {
  for (;;) {
    asm volatile("" ::: "memory");
  }
}
std::vector<double> echo_vector(std::vector<double> v) { return v; }

using coproc::process_pool;

}  // namespace

TEST_CASE("submit returns the value", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    CHECK(co_await pool.submit(add, 2, 3) == 5);
    CHECK(co_await pool.submit(greet, "world") == "hello world");
    CHECK(co_await pool.submit([](int n) { return n * 2; }, 21) == 42);
    co_await pool.submit(nothing);
    int pid = co_await pool.submit(my_pid);
    CHECK(pid != ::getpid());
  });
}

TEST_CASE("a task's exception arrives as remote_error", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    try {
      co_await pool.submit(throws_range, 1);
      FAIL("no exception");
    } catch (const coproc::remote_error& e) {
      CHECK(e.type_name() == "std::out_of_range");
      CHECK(e.message() == "index 7 past the end");
    }
    CHECK(co_await pool.submit(add, 1, 1) == 2);  // the worker survived
  });
}

TEST_CASE("a crashing worker fails only its task and is replaced", "[process_pool]") {
  for (int sig : {SIGKILL, SIGSEGV, SIGABRT}) {
    coproc::test::run_async([sig](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2});
      try {
        co_await pool.submit(crash_with, sig);
        FAIL("no exception");
      } catch (const std::system_error& e) {
        CHECK(e.code() == coproc::errc::worker_crashed);
        CHECK(std::string(e.what()).find("signal " + std::to_string(sig)) != std::string::npos);
      }
      CHECK(co_await pool.submit(fib, 20) == 6765);
      CHECK(pool.stats().worker_crashes == 1);
      CHECK(pool.stats().respawns == 1);
    });
  }
}

TEST_CASE("a worker that calls _exit fails its task with the status", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    try {
      co_await pool.submit(exit_with, 7);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::worker_crashed);
      CHECK(std::string(e.what()).find("status 7") != std::string::npos);
    }
    CHECK(co_await pool.submit(add, 2, 2) == 4);
  });
}

TEST_CASE("a task past task_timeout fails and its worker is replaced", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(),
                      {.workers = 1, .task_timeout = std::chrono::milliseconds(100)});
    try {
      co_await pool.submit(spin_forever);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::task_timeout);
    }
    CHECK(co_await pool.submit(add, 3, 4) == 7);
  });
}

TEST_CASE("losing a race against a timer kills the running task", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    process_pool pool(ctx.get_executor(), {.workers = 1});
    asio::steady_timer t(ctx, std::chrono::milliseconds(50));
    auto r = co_await (pool.submit(spin_forever) || t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);
    CHECK(co_await pool.submit(add, 5, 5) == 10);
    CHECK(pool.stats().tasks_cancelled == 1);
  });
}

TEST_CASE("submit after shutdown fails with pool_stopped", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    CHECK(co_await pool.submit(add, 1, 2) == 3);
    co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
    try {
      co_await pool.submit(add, 1, 2);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::pool_stopped);
    }
  });
}

TEST_CASE("map returns results in input order", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    std::vector<int> in(1000);
    for (int i = 0; i < 1000; ++i) {
      in[i] = i % 25;
    }
    std::vector<int> out = co_await pool.map(fib, in);
    REQUIRE(out.size() == in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
      CHECK(out[i] == fib(in[i]));
    }
  });
}

TEST_CASE("a large payload crosses through the arena", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    std::vector<double> v(8 << 20);
    for (std::size_t i = 0; i < v.size(); ++i) {
      v[i] = static_cast<double>(i) * 0.5;
    }
    auto back = co_await pool.submit(echo_vector, v);
    CHECK(back == v);
  });
}

TEST_CASE("use_future works from a plain thread", "[process_pool]") {
  asio::io_context ctx;
  process_pool pool(ctx.get_executor(), {.workers = 1});
  auto guard = asio::make_work_guard(ctx);
  std::thread loop([&] { ctx.run(); });
  std::future<int> f = pool.async_submit(add, 20, 22, asio::use_future);
  CHECK(f.get() == 42);
  guard.reset();
  ctx.stop();
  loop.join();
}
