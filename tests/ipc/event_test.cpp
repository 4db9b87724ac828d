#include "coproc/ipc/event.hpp"

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <thread>

#include "async_test.hpp"
#include "sync_test_support.hpp"

using namespace std::chrono_literals;
using coproc::test::fork_child;
using coproc::test::latch_pipe;
using coproc::test::wait_child;

TEST_CASE("set, clear and is_set", "[event]") {
  coproc::event e;
  CHECK(!e.is_set());
  e.set();
  CHECK(e.is_set());
  e.wait();  // returns at once while set
  CHECK(e.wait_for(0ms));
  e.clear();
  CHECK(!e.is_set());
  auto t0 = std::chrono::steady_clock::now();
  CHECK(!e.wait_for(20ms));
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
}

TEST_CASE("set wakes every waiting process and the parent's async waiter", "[event]") {
  coproc::event e;
  latch_pipe ready;
  auto waiter = [&] {
    ready.signal();
    e.wait();
    return e.is_set() ? 0 : 1;
  };
  pid_t a = fork_child(waiter);
  pid_t b = fork_child(waiter);
  REQUIRE(ready.wait());
  REQUIRE(ready.wait());
  bool woke = false;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer t(co_await asio::this_coro::executor, 10ms);
          co_await t.async_wait(asio::use_awaitable);
          e.set();
        },
        asio::detached);
    co_await e.async_wait(asio::use_awaitable);
    woke = true;
  });
  CHECK(woke);
  CHECK(wait_child(a) == 0);
  CHECK(wait_child(b) == 0);
}

TEST_CASE("a waiter woken by set returns even if the event was cleared at once", "[event]") {
  coproc::event e;
  latch_pipe ready;
  pid_t pid = fork_child([&] {
    ready.signal();
    e.wait();
    return 0;
  });
  REQUIRE(ready.wait());
  while (e.n_waiting() == 0) {  // the child is about to sleep in wait()
    std::this_thread::yield();
  }
  e.set();
  e.clear();
  CHECK(wait_child(pid) == 0);
}

TEST_CASE("async_wait on an event is cancellable", "[event]") {
  coproc::event e;
  bool timer_won = false;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer t(co_await asio::this_coro::executor, 10ms);
    auto r = co_await (e.async_wait(asio::use_awaitable) || t.async_wait(asio::use_awaitable));
    timer_won = r.index() == 1;
  });
  CHECK(timer_won);
}
