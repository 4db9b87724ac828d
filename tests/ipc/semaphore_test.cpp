#include "coproc/ipc/semaphore.hpp"

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>

#include "async_test.hpp"
#include "sync_test_support.hpp"

using namespace std::chrono_literals;
using coproc::test::fork_child;
using coproc::test::latch_pipe;
using coproc::test::wait_child;

TEST_CASE("a semaphore counts its units", "[semaphore]") {
  coproc::semaphore s(2);
  CHECK(s.value() == 2);
  CHECK(s.try_acquire());
  CHECK(s.try_acquire());
  CHECK(!s.try_acquire());
  CHECK(s.value() == 0);
  s.release(2);
  CHECK(s.value() == 2);
  s.acquire();
  CHECK(s.value() == 1);
}

TEST_CASE("a bounded semaphore refuses a release above its bound", "[semaphore]") {
  coproc::bounded_semaphore b(1);
  CHECK_THROWS_AS(b.release(), std::system_error);
  try {
    b.release();
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::value_too_large);
  }
  CHECK(b.value() == 1);
  b.acquire();
  b.release();
  CHECK(b.value() == 1);
  coproc::semaphore unbounded(0);
  unbounded.release(5);
  CHECK(unbounded.value() == 5);
}

TEST_CASE("units released by a child wake a blocked parent, timed waits time out", "[semaphore]") {
  coproc::semaphore s(0);
  latch_pipe go;
  pid_t pid = fork_child([&] {
    go.wait();
    s.release();
    s.release();
    return 0;
  });
  auto t0 = std::chrono::steady_clock::now();
  CHECK(!s.try_acquire_for(20ms));
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  go.signal();
  s.acquire();
  CHECK(s.try_acquire_for(5s));
  CHECK(wait_child(pid) == 0);
  CHECK(s.value() == 0);
}

TEST_CASE("semaphore bounds concurrency across processes", "[semaphore]") {
  coproc::shared_memory seg(4096);
  coproc::semaphore s(seg, 0, coproc::shm_init::create, 2);
  auto* inside = reinterpret_cast<std::atomic<int>*>(seg.data() + 128);
  auto* peak = reinterpret_cast<std::atomic<int>*>(seg.data() + 192);
  auto work = [&] {
    for (int i = 0; i < 2000; ++i) {
      s.acquire();
      int now = inside->fetch_add(1) + 1;
      int p = peak->load();
      while (now > p && !peak->compare_exchange_weak(p, now)) {
      }
      inside->fetch_sub(1);
      s.release();
    }
    return 0;
  };
  pid_t a = fork_child(work);
  pid_t b = fork_child(work);
  pid_t c = fork_child(work);
  CHECK(wait_child(a) == 0);
  CHECK(wait_child(b) == 0);
  CHECK(wait_child(c) == 0);
  CHECK(peak->load() <= 2);
  CHECK(s.value() == 2);
}

TEST_CASE("async_acquire waits in the loop and can be cancelled", "[semaphore]") {
  coproc::semaphore s(0);
  latch_pipe go;
  pid_t pid = fork_child([&] {
    go.wait();
    s.release();
    return 0;
  });
  std::error_code cancelled;
  bool timer_first = false;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer t(co_await asio::this_coro::executor, 10ms);
    auto r = co_await (s.async_acquire(asio::experimental::as_tuple(asio::use_awaitable)) ||
                       t.async_wait(asio::use_awaitable));
    timer_first = r.index() == 1;
    CHECK(s.value() == 0);
    // Now a real acquire: the child releases once told.
    go.signal();
    auto [ec] = co_await s.async_acquire(asio::experimental::as_tuple(asio::use_awaitable));
    cancelled = ec;
  });
  CHECK(timer_first);
  CHECK(!cancelled);
  CHECK(s.value() == 0);
  CHECK(wait_child(pid) == 0);
}
