#include "coproc/ipc/lock.hpp"

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>

#include "async_test.hpp"
#include "coproc/ipc/recursive_lock.hpp"
#include "coproc/ipc/shared_memory.hpp"
#include "sync_test_support.hpp"

using namespace std::chrono_literals;
using coproc::test::fork_child;
using coproc::test::latch_pipe;
using coproc::test::wait_child;

namespace {

struct counter_block {
  std::uint64_t value;
};

// Waits (yielding, bounded) until a waiter has marked the word: lets a test
// kill the holder only once someone sleeps on the lock.
bool until_waiter_marked(coproc::lock& l) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((l.state().word.load() & coproc::detail::futex_waiters) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

TEST_CASE("two processes x 100k increments under the lock lose none", "[lock]") {
  coproc::shared_memory seg(4096);
  coproc::lock l(seg, 0);
  auto* c = reinterpret_cast<counter_block*>(seg.data() + 128);
  constexpr int n = 100'000;
  pid_t pid = fork_child([&] {
    for (int i = 0; i < n; ++i) {
      std::lock_guard g(l);
      c->value = c->value + 1;
    }
    return 0;
  });
  for (int i = 0; i < n; ++i) {
    std::lock_guard g(l);
    c->value = c->value + 1;
  }
  REQUIRE(wait_child(pid) == 0);
  CHECK(c->value == 2 * n);
  CHECK(!l.is_locked());
}

TEST_CASE("async_lock in the parent excludes a blocking child", "[lock]") {
  coproc::lock l;
  coproc::shared_memory seg(4096);
  auto* c = reinterpret_cast<counter_block*>(seg.data());
  constexpr int n = 20'000;
  pid_t pid = fork_child([&] {
    for (int i = 0; i < n; ++i) {
      std::lock_guard g(l);
      c->value = c->value + 1;
    }
    return 0;
  });
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    for (int i = 0; i < n; ++i) {
      co_await l.async_lock(asio::use_awaitable);
      c->value = c->value + 1;
      l.unlock();
    }
  });
  REQUIRE(wait_child(pid) == 0);
  CHECK(c->value == 2 * n);
}

TEST_CASE("a holder killed by SIGKILL hands the lock over with owner_died", "[lock]") {
  coproc::lock l;
  latch_pipe locked;
  pid_t pid = fork_child([&] {
    l.lock();
    locked.signal();
    ::pause();
    return 0;
  });
  REQUIRE(locked.wait());
  CHECK(l.is_locked());
  CHECK(l.owner() == static_cast<std::uint32_t>(pid));
  CHECK(!l.try_lock());
  ::kill(pid, SIGKILL);
  CHECK(wait_child(pid) == 128 + SIGKILL);
  std::error_code ec = l.lock();
  CHECK(ec == coproc::errc::owner_died);
  CHECK(l.owner_died());
  l.unlock();
  // Recovered: the next hold is an ordinary one.
  CHECK(!l.lock());
  CHECK(!l.owner_died());
  l.unlock();
}

TEST_CASE("a blocked locker is woken with owner_died when the holder is killed", "[lock]") {
  coproc::lock l;
  latch_pipe locked;
  pid_t pid = fork_child([&] {
    l.lock();
    locked.signal();
    ::pause();
    return 0;
  });
  REQUIRE(locked.wait());
  std::error_code got;
  std::thread waiter([&] {
    got = l.lock();
    l.unlock();
  });
  REQUIRE(until_waiter_marked(l));
  ::kill(pid, SIGKILL);
  waiter.join();
  CHECK(got == coproc::errc::owner_died);
  CHECK(wait_child(pid) == 128 + SIGKILL);
}

TEST_CASE("async_lock completes with owner_died when the holder is killed", "[lock]") {
  coproc::lock l;
  latch_pipe locked;
  pid_t pid = fork_child([&] {
    l.lock();
    locked.signal();
    ::pause();
    return 0;
  });
  REQUIRE(locked.wait());
  std::error_code got;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    // Kill the holder from the loop once the async waiter marked the word.
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer t(co_await asio::this_coro::executor);
          while ((l.state().word.load() & coproc::detail::futex_waiters) == 0) {
            t.expires_after(1ms);
            co_await t.async_wait(asio::use_awaitable);
          }
          ::kill(pid, SIGKILL);
        },
        asio::detached);
    auto [ec] = co_await l.async_lock(asio::experimental::as_tuple(asio::use_awaitable));
    got = ec;
    l.unlock();
  });
  CHECK(got == coproc::errc::owner_died);
  CHECK(wait_child(pid) == 128 + SIGKILL);
}

TEST_CASE("async_lock does not block the loop: a timer fires while it waits", "[lock]") {
  coproc::lock l;
  latch_pipe locked, release;
  pid_t pid = fork_child([&] {
    l.lock();
    locked.signal();
    release.wait();
    l.unlock();
    return 0;
  });
  REQUIRE(locked.wait());
  bool timer_fired = false;
  bool timer_before_lock = false;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer t(co_await asio::this_coro::executor, 20ms);
          co_await t.async_wait(asio::use_awaitable);
          timer_fired = true;
          release.signal();  // only now may the holder let go
        },
        asio::detached);
    co_await l.async_lock(asio::use_awaitable);
    timer_before_lock = timer_fired;
    l.unlock();
  });
  CHECK(timer_fired);
  CHECK(timer_before_lock);
  CHECK(wait_child(pid) == 0);
}

TEST_CASE("a cancelled async_lock completes with operation_aborted and holds nothing", "[lock]") {
  coproc::lock l;
  latch_pipe locked, release;
  pid_t pid = fork_child([&] {
    l.lock();
    locked.signal();
    release.wait();
    l.unlock();
    return 0;
  });
  REQUIRE(locked.wait());
  std::error_code got;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer t(co_await asio::this_coro::executor, 20ms);
    auto r = co_await (l.async_lock(asio::experimental::as_tuple(asio::use_awaitable)) ||
                       t.async_wait(asio::use_awaitable));
    if (r.index() == 0) {
      got = std::get<0>(std::get<0>(r));
    } else {
      got = asio::error::operation_aborted;  // the timer won: the lock wait was cancelled
    }
  });
  CHECK(got == asio::error::operation_aborted);
  CHECK(l.owner() == static_cast<std::uint32_t>(pid));
  release.signal();
  CHECK(wait_child(pid) == 0);
  CHECK(l.try_lock());
  l.unlock();
}

TEST_CASE("cancellation through a cancellation_signal aborts the wait", "[lock]") {
  coproc::lock l;
  latch_pipe locked, release;
  pid_t pid = fork_child([&] {
    l.lock();
    locked.signal();
    release.wait();
    l.unlock();
    return 0;
  });
  REQUIRE(locked.wait());
  asio::io_context ctx;
  asio::cancellation_signal sig;
  std::error_code got;
  bool called = false;
  l.async_lock(
      asio::bind_cancellation_slot(sig.slot(), asio::bind_executor(ctx, [&](std::error_code ec) {
                                     got = ec;
                                     called = true;
                                   })));
  CHECK(!called);  // never completes inside the initiating call
  asio::post(ctx, [&] { sig.emit(asio::cancellation_type::terminal); });
  ctx.run_for(10s);
  CHECK(called);
  CHECK(got == asio::error::operation_aborted);
  release.signal();
  CHECK(wait_child(pid) == 0);
}

TEST_CASE("try_lock_for times out while another process holds the lock", "[lock]") {
  coproc::lock l;
  latch_pipe locked, release;
  pid_t pid = fork_child([&] {
    l.lock();
    locked.signal();
    release.wait();
    l.unlock();
    return 0;
  });
  REQUIRE(locked.wait());
  auto t0 = std::chrono::steady_clock::now();
  CHECK(!l.try_lock_for(30ms));
  CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
  release.signal();
  CHECK(wait_child(pid) == 0);
  CHECK(l.try_lock_for(1s));
  l.unlock();
}

TEST_CASE("misuse is reported: relock in the holder, unlock by a non-holder", "[lock]") {
  coproc::lock l;
  l.lock();
  CHECK_THROWS_AS(l.lock(), std::system_error);
  std::thread other([&] { CHECK_THROWS_AS(l.unlock(), std::system_error); });
  other.join();
  l.unlock();
  CHECK_THROWS_AS(l.unlock(), std::system_error);
}

TEST_CASE("a lock attached through the segment's fd is the same lock", "[lock]") {
  coproc::shared_memory seg(4096);
  coproc::lock a(seg, 64, coproc::shm_init::create);
  auto other =
      coproc::shared_memory::attach(coproc::unique_fd(::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0)));
  CHECK(other.size() == 4096);
  coproc::lock b(other, 64, coproc::shm_init::attach);
  a.lock();
  CHECK(b.is_locked());
  CHECK(!b.try_lock());
  a.unlock();
  CHECK(b.try_lock());
  b.unlock();
  CHECK_THROWS_AS(coproc::lock(seg, 4090), std::out_of_range);
  CHECK_THROWS_AS(coproc::lock(seg, 8), std::invalid_argument);
}

TEST_CASE("recursive_lock re-enters and survives its holder's death", "[lock][recursive_lock]") {
  coproc::recursive_lock r;
  CHECK(!r.lock());
  CHECK(r.try_lock());
  CHECK(r.depth() == 2);
  r.unlock();
  r.unlock();
  CHECK(r.depth() == 0);
  CHECK_THROWS_AS(r.unlock(), std::system_error);

  latch_pipe locked;
  pid_t pid = fork_child([&] {
    r.lock();
    r.lock();
    locked.signal();
    ::pause();
    return 0;
  });
  REQUIRE(locked.wait());
  CHECK(!r.try_lock_for(10ms));
  ::kill(pid, SIGKILL);
  CHECK(wait_child(pid) == 128 + SIGKILL);
  std::error_code got;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    auto [ec] = co_await r.async_lock(asio::experimental::as_tuple(asio::use_awaitable));
    got = ec;
    co_await r.async_lock(asio::use_awaitable);
  });
  CHECK(got == coproc::errc::owner_died);
  CHECK(r.depth() == 2);
  r.unlock();
  r.unlock();
  CHECK(r.depth() == 0);
}
