// Tests of coproc::joinable_queue across real processes: join waits for every
// task_done, task_done called too often throws, failed puts are not counted,
// async_put/async_get/async_join in the loop, and a consumer killed between
// get() and task_done() (join never returns by itself: timed and cancellable
// joins do, and a supervisor's task_done releases it).

#include "coproc/ipc/joinable_queue.hpp"

#include <signal.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdint>
#include <string>

#include "async_test.hpp"
#include "coproc/ipc/shared_memory.hpp"
#include "sync_test_support.hpp"

using namespace std::chrono_literals;
using coproc::test::fork_child;
using coproc::test::latch_pipe;
using coproc::test::wait_child;

TEST_CASE("join returns once every item was marked done by consumer processes",
          "[joinable_queue]") {
  constexpr int items = 2000;
  coproc::joinable_queue<std::uint64_t> q({.max_items = 64});
  coproc::shared_memory seg(4096);
  auto* processed = reinterpret_cast<std::atomic<std::uint64_t>*>(seg.data());
  CHECK(q.unfinished_tasks() == 0);
  q.join();  // nothing put: returns at once
  pid_t consumers[2];
  for (pid_t& pid : consumers) {
    pid = fork_child([&] {
      for (;;) {
        std::uint64_t v = 0;
        try {
          v = q.get();
        } catch (const std::system_error&) {
          return 0;  // closed and empty
        }
        processed->fetch_add(v, std::memory_order_relaxed);
        q.task_done();
      }
    });
  }
  std::uint64_t sum = 0;
  for (int i = 1; i <= items; ++i) {
    q.put(static_cast<std::uint64_t>(i));
    sum += static_cast<std::uint64_t>(i);
  }
  q.join();
  // Everything was processed before join returned, not merely fetched.
  CHECK(processed->load() == sum);
  CHECK(q.unfinished_tasks() == 0);
  q.close();
  for (pid_t pid : consumers) {
    CHECK(wait_child(pid) == 0);
  }
}

TEST_CASE("task_done more often than items throws; failed puts are not counted",
          "[joinable_queue]") {
  coproc::joinable_queue<std::string> q({.max_items = 1});
  CHECK_THROWS_AS(q.task_done(), std::system_error);
  q.put("a");
  CHECK_FALSE(q.try_put("b"));  // full: not counted
  CHECK_FALSE(q.try_put_for("c", 1ms));
  CHECK(q.unfinished_tasks() == 1);
  CHECK(q.get() == "a");
  CHECK_FALSE(q.try_join_for(1ms));
  q.task_done();
  CHECK(q.try_join_for(0ms));
  try {
    q.task_done();
    FAIL("task_done without an unfinished task must throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::invalid_argument);
  }
  CHECK(q.unfinished_tasks() == 0);
  q.close();
  CHECK_THROWS_AS(q.put("d"), std::system_error);  // closed: not counted
  CHECK(q.unfinished_tasks() == 0);
  q.join();
}

TEST_CASE("async_put, async_get and async_join in the loop with a consumer process",
          "[joinable_queue]") {
  coproc::joinable_queue<int> q({.max_items = 4});
  latch_pipe go;
  pid_t consumer = fork_child([&] {
    go.wait();
    for (int i = 0; i < 100; ++i) {
      (void)q.get();
      q.task_done();
    }
    return 0;
  });
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    // Items the loop puts and takes itself count too.
    co_await q.async_put(-1, asio::use_awaitable);
    CHECK(q.unfinished_tasks() == 1);
    int own = co_await q.async_get(asio::use_awaitable);
    CHECK(own == -1);
    q.task_done();
    co_await q.async_join(asio::use_awaitable);  // zero: completes (posted)
    go.signal();
    for (int i = 0; i < 100; ++i) {
      co_await q.async_put(i, asio::use_awaitable);  // waits for room at times
    }
    co_await q.async_join(asio::use_awaitable);
    CHECK(q.unfinished_tasks() == 0);
  });
  CHECK(wait_child(consumer) == 0);
}

TEST_CASE("a failed or cancelled async_put is not counted", "[joinable_queue]") {
  coproc::joinable_queue<int> q({.max_items = 1});
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    co_await q.async_put(1, asio::use_awaitable);
    asio::steady_timer t(ctx, 10ms);
    auto r = co_await (q.async_put(2, asio::use_awaitable) || t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);  // the queue was full: the put was withdrawn
    CHECK(q.unfinished_tasks() == 1);
    q.close();
    auto [ec] = co_await q.async_put(3, asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec == coproc::errc::queue_closed);
    CHECK(q.unfinished_tasks() == 1);
  });
}

TEST_CASE(
    "a consumer killed before task_done: timed and cancelled joins return, a supervisor's "
    "task_done releases join",
    "[joinable_queue]") {
  coproc::joinable_queue<int> q;
  latch_pipe got_it;
  latch_pipe never;  // the child waits here until killed
  pid_t consumer = fork_child([&] {
    (void)q.get();
    got_it.signal();
    never.wait();  // dies here, before task_done()
    q.task_done();
    return 1;
  });
  q.put(42);
  REQUIRE(got_it.wait());
  ::kill(consumer, SIGKILL);
  CHECK(wait_child(consumer) == 128 + SIGKILL);
  // The dead consumer's item stays counted: join() alone would never return.
  CHECK(q.unfinished_tasks() == 1);
  CHECK(q.empty());
  CHECK_FALSE(q.try_join_for(20ms));
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer t(ctx, 20ms);
    auto r = co_await (q.async_join(asio::use_awaitable) || t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);  // the timer won; the join was withdrawn
    // A supervisor that saw the death marks the item done: joiners wake.
    bool joined = false;
    q.async_join(asio::bind_executor(ctx, [&](std::error_code ec) { joined = !ec; }));
    co_await asio::post(ctx, asio::use_awaitable);
    CHECK_FALSE(joined);
    q.task_done();
    asio::steady_timer poll(ctx);
    while (!joined) {
      poll.expires_after(1ms);
      co_await poll.async_wait(asio::use_awaitable);
    }
    CHECK(joined);
  });
  q.join();
  CHECK(q.unfinished_tasks() == 0);
}

TEST_CASE("a joiner blocked in another process wakes when the count reaches zero",
          "[joinable_queue]") {
  coproc::joinable_queue<int> q;
  q.put(1);
  q.put(2);
  latch_pipe joining;
  pid_t joiner = fork_child([&] {
    joining.signal();
    q.join();
    return q.unfinished_tasks() == 0 ? 0 : 2;
  });
  REQUIRE(joining.wait());
  (void)q.get();
  q.task_done();
  (void)q.get();
  q.task_done();
  CHECK(wait_child(joiner) == 0);
}
