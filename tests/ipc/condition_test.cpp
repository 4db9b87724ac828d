#include "coproc/ipc/condition.hpp"

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <mutex>

#include "async_test.hpp"
#include "sync_test_support.hpp"

using namespace std::chrono_literals;
using coproc::test::fork_child;
using coproc::test::wait_child;

namespace {
struct box {
  int stage;
};
}  // namespace

TEST_CASE("a child waits for a predicate the parent makes true", "[condition]") {
  coproc::shared_memory seg(4096);
  coproc::condition cv(seg, 0);
  auto* b = reinterpret_cast<box*>(seg.data() + coproc::condition::shared_size);
  pid_t pid = fork_child([&] {
    std::lock_guard g(cv.get_lock());
    cv.wait([&] { return b->stage == 1; });
    b->stage = 2;
    cv.notify_all();
    return 0;
  });
  {
    std::lock_guard g(cv.get_lock());
    b->stage = 1;
    cv.notify_all();
  }
  {
    std::lock_guard g(cv.get_lock());
    CHECK(cv.wait_for(10s, [&] { return b->stage == 2; }));
  }
  CHECK(wait_child(pid) == 0);
}

TEST_CASE("async_wait releases the lock, is notified by a child, holds the lock again",
          "[condition]") {
  coproc::shared_memory seg(4096);
  coproc::condition cv(seg, 0);
  auto* b = reinterpret_cast<box*>(seg.data() + coproc::condition::shared_size);
  pid_t pid = fork_child([&] {
    std::lock_guard g(cv.get_lock());  // only possible once the parent waits
    b->stage = 1;
    cv.notify_one();
    return 0;
  });
  bool held_after = false;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    co_await cv.get_lock().async_lock(asio::use_awaitable);
    while (b->stage != 1) {
      co_await cv.async_wait(asio::use_awaitable);
    }
    held_after = coproc::detail::held_by_me(cv.get_lock().state());
    cv.get_lock().unlock();
  });
  CHECK(held_after);
  CHECK(wait_child(pid) == 0);
}

TEST_CASE("condition waits time out and cancel with the lock held again", "[condition]") {
  coproc::lock l;
  coproc::condition cv(l);
  l.lock();
  auto t0 = std::chrono::steady_clock::now();
  CHECK(!cv.wait_for(20ms));
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  CHECK(coproc::detail::held_by_me(l.state()));
  std::error_code got;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    asio::cancellation_signal sig;
    asio::steady_timer t(co_await asio::this_coro::executor, 10ms);
    t.async_wait([&](std::error_code) { sig.emit(asio::cancellation_type::terminal); });
    auto [ec] = co_await cv.async_wait(asio::bind_cancellation_slot(
        sig.slot(), asio::experimental::as_tuple(asio::use_awaitable)));
    got = ec;
  });
  CHECK(got == asio::error::operation_aborted);
  CHECK(coproc::detail::held_by_me(l.state()));
  l.unlock();
  CHECK_THROWS_AS(cv.wait(), std::system_error);  // not holding the lock
}
