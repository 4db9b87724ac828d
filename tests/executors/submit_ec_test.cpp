// coproc::async_submit_ec (issue 14 item 3): infrastructure failures complete
// with a std::error_code, so asio::redirect_error and as_tuple work and
// nothing is thrown; the task's own exception gives errc::task_raised and is
// handed over through the optional exception_ptr.
#include <signal.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "async_test.hpp"
#include "coproc/coproc.hpp"

namespace {

using namespace std::chrono_literals;
using asio::experimental::as_tuple;

int twice(int x) {
  return 2 * x;
}
int crash(int sig) {
  ::raise(sig);
  return 0;
}
int sleep_ms(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}
int throws(int) {
  throw std::out_of_range("no such item");
}
std::size_t size_of(std::vector<char> v) {
  return v.size();
}
void nothing() {}

}  // namespace

TEST_CASE("async_submit_ec completes with no code and the value", "[submit_ec]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    std::error_code ec = make_error_code(coproc::errc::frame_corrupt);
    int v = co_await coproc::async_submit_ec(pool, twice, 21,
                                             asio::redirect_error(asio::use_awaitable, ec));
    CHECK(!ec);
    CHECK(v == 42);
    auto [ec2] = co_await coproc::async_submit_ec(pool, nothing, as_tuple(asio::use_awaitable));
    CHECK(!ec2);
  });
}

TEST_CASE("async_submit_ec: a crashed worker is errc::worker_crashed, not thrown", "[submit_ec]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    std::error_code ec;
    int v = co_await coproc::async_submit_ec(pool, crash, SIGKILL,
                                             asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == coproc::errc::worker_crashed);
    CHECK(v == 0);
    auto [ec2, v2] =
        co_await coproc::async_submit_ec(pool, crash, SIGSEGV, as_tuple(asio::use_awaitable));
    CHECK(ec2 == coproc::errc::worker_crashed);
    // The pool goes on.
    auto [ec3, v3] =
        co_await coproc::async_submit_ec(pool, twice, 4, as_tuple(asio::use_awaitable));
    CHECK(!ec3);
    CHECK(v3 == 8);
  });
}

TEST_CASE("async_submit_ec: a task past task_timeout is errc::task_timeout", "[submit_ec]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1, .task_timeout = 100ms});
    std::error_code ec;
    co_await coproc::async_submit_ec(pool, sleep_ms, 10'000,
                                     asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == coproc::errc::task_timeout);
    auto [ec2, v2] =
        co_await coproc::async_submit_ec(pool, sleep_ms, 10'000, as_tuple(asio::use_awaitable));
    CHECK(ec2 == coproc::errc::task_timeout);
  });
}

TEST_CASE("async_submit_ec: a pool shut down is errc::pool_stopped", "[submit_ec]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    // A task running while a cancelling shutdown starts, then one after it.
    std::error_code running_ec;
    bool running_done = false;
    coproc::async_submit_ec(pool, sleep_ms, 10'000, [&](std::error_code ec, int) {
      running_ec = ec;
      running_done = true;
    });
    asio::steady_timer t(ctx, 100ms);
    co_await t.async_wait(asio::use_awaitable);
    co_await pool.async_shutdown(coproc::shutdown_mode::cancel, asio::use_awaitable);
    CHECK(running_done);
    CHECK(running_ec == coproc::errc::pool_stopped);
    std::error_code ec;
    co_await coproc::async_submit_ec(pool, twice, 1, asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == coproc::errc::pool_stopped);
    auto [ec2, v2] =
        co_await coproc::async_submit_ec(pool, twice, 1, as_tuple(asio::use_awaitable));
    CHECK(ec2 == coproc::errc::pool_stopped);
  });
}

TEST_CASE("async_submit_ec: an argument over max_payload is errc::payload_too_large",
          "[submit_ec]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1, .max_payload = 1 << 20});
    std::vector<char> big(2 << 20, 'x');
    std::error_code ec;
    co_await coproc::async_submit_ec(pool, size_of, big,
                                     asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == coproc::errc::payload_too_large);
    auto [ec2, n] =
        co_await coproc::async_submit_ec(pool, size_of, big, as_tuple(asio::use_awaitable));
    CHECK(ec2 == coproc::errc::payload_too_large);
    auto [ec3, n3] = co_await coproc::async_submit_ec(pool, size_of, std::vector<char>(10),
                                                      as_tuple(asio::use_awaitable));
    CHECK(!ec3);
    CHECK(n3 == 10);
  });
}

TEST_CASE("async_submit_ec: cancellation is operation_aborted, and the worker is replaced",
          "[submit_ec]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    asio::cancellation_signal cancel;
    asio::steady_timer t(ctx, 100ms);
    t.async_wait([&](std::error_code) { cancel.emit(asio::cancellation_type::terminal); });
    std::error_code ec;
    auto started = std::chrono::steady_clock::now();
    co_await coproc::async_submit_ec(
        pool, sleep_ms, 10'000,
        asio::bind_cancellation_slot(cancel.slot(), asio::redirect_error(asio::use_awaitable, ec)));
    CHECK(ec == asio::error::operation_aborted);
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    // The same through as_tuple and an awaitable operator's race.
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer deadline(ctx, 100ms);
    auto r =
        co_await (coproc::async_submit_ec(pool, sleep_ms, 10'000, as_tuple(asio::use_awaitable)) ||
                  deadline.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);
    auto [ec2, v2] =
        co_await coproc::async_submit_ec(pool, twice, 5, as_tuple(asio::use_awaitable));
    CHECK(!ec2);
    CHECK(v2 == 10);
  });
}

TEST_CASE("async_submit_ec: a pool destroyed with the task pending is operation_aborted",
          "[submit_ec]") {
  asio::io_context ctx;
  std::error_code ec;
  bool called = false;
  {
    coproc::process_pool pool(ctx, {.workers = 1});
    coproc::async_submit_ec(pool, sleep_ms, 10'000, [&](std::error_code e, int) {
      ec = e;
      called = true;
    });
    ctx.run_for(100ms);
  }
  ctx.run_for(5s);
  CHECK(called);
  CHECK(ec == asio::error::operation_aborted);
}

TEST_CASE("async_submit_ec: the task's exception is errc::task_raised and handed over",
          "[submit_ec]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    std::exception_ptr task_error;
    std::error_code ec;
    int v = co_await coproc::async_submit_ec(pool, task_error, throws, 1,
                                             asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == coproc::errc::task_raised);
    CHECK(v == 0);
    REQUIRE(task_error);
    std::string what;
    try {
      std::rethrow_exception(task_error);
    } catch (const std::out_of_range& e) {  // the standard type, as itself
      what = e.what();
    }
    CHECK(what == "no such item");
    // Without the slot: the code only, nothing thrown.
    auto [ec2, v2] =
        co_await coproc::async_submit_ec(pool, throws, 1, as_tuple(asio::use_awaitable));
    CHECK(ec2 == coproc::errc::task_raised);
    // A success leaves the slot untouched.
    std::exception_ptr untouched;
    auto [ec3, v3] =
        co_await coproc::async_submit_ec(pool, untouched, twice, 2, as_tuple(asio::use_awaitable));
    CHECK(!ec3);
    CHECK(!untouched);
    CHECK(v3 == 4);
  });
}

TEST_CASE("async_submit_ec works with a callback and with use_future", "[submit_ec]") {
  asio::io_context ctx;
  coproc::process_pool pool(ctx, {.workers = 1});
  std::error_code ec = make_error_code(coproc::errc::frame_corrupt);
  int value = 0;
  coproc::async_submit_ec(pool, twice, 8, [&](std::error_code e, int v) {
    ec = e;
    value = v;
  });
  ctx.run_for(10s);
  CHECK(!ec);
  CHECK(value == 16);
  ctx.restart();
  std::thread loop([&] {
    auto guard = asio::make_work_guard(ctx);
    ctx.run_for(10s);
  });
  // use_future turns a code into an exception, as for every Asio operation.
  auto good = coproc::async_submit_ec(pool, twice, 9, asio::use_future);
  CHECK(good.get() == 18);
  auto bad = coproc::async_submit_ec(pool, crash, SIGKILL, asio::use_future);
  std::error_code code;
  try {
    bad.get();
  } catch (const std::system_error& e) {
    code = e.code();
  }
  CHECK(code == coproc::errc::worker_crashed);
  ctx.stop();
  loop.join();
}
