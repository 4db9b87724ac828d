// Tests of async_futex_wait: IORING_OP_FUTEX_WAIT and the futex watcher,
// woken from another process, cancelled.

#include <unistd.h>

#include <asio.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <coproc/runtime/child_process.hpp>
#include <coproc/runtime/detail/futex.hpp>
#include <coproc/runtime/futex_waiter.hpp>
#include <coproc/runtime/mapped_region.hpp>
#include <coproc/runtime/pipe_reader.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <new>

#include "async_test.hpp"

namespace {

std::atomic<std::uint32_t>& word_in(coproc::mapped_region& region) {
  return *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(region.data()));
}

}  // namespace

TEST_CASE("a futex wait wakes on another process's FUTEX_WAKE", "[futex_waiter]") {
  bool use_futex_wait = GENERATE(true, false);
  auto region = coproc::mapped_region::create(4096);
  auto& word = word_in(region);
  word.store(0);
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    auto& service = coproc::uring_service::install(ctx, {.use_futex_wait = use_futex_wait});
    if (!use_futex_wait) {
      CHECK(!service.has_futex_wait());
    }
    // The child waits for a go byte, then publishes 1 and wakes.
    auto child = coproc::child_process::fork_child([&, rfd = r.get()] {
      w.reset();
      char c;
      if (::read(rfd, &c, 1) != 1) {
        ::_exit(1);
      }
      word.store(1);
      coproc::detail::futex_wake(word, 1);
      ::_exit(0);
    });
    std::error_code result = asio::error::would_block;
    bool done = false;
    coproc::async_futex_wait(ctx.get_executor(), word, 0, [&](std::error_code ec) {
      result = ec;
      done = true;
    });
    CHECK(!done);
    REQUIRE(::write(w.get(), "g", 1) == 1);
    while (word.load() == 0 || !done) {
      // Spurious completions are allowed: wait again while the word is 0.
      if (done && word.load() == 0) {
        done = false;
        coproc::async_futex_wait(ctx.get_executor(), word, 0, [&](std::error_code ec) {
          result = ec;
          done = true;
        });
      }
      co_await asio::post(ctx, asio::use_awaitable);
    }
    CHECK(!result);
    CHECK(word.load() == 1);
    auto st = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
    CHECK(st.success());
  });
}

TEST_CASE("a futex wait on a word that already changed completes", "[futex_waiter]") {
  bool use_futex_wait = GENERATE(true, false);
  std::atomic<std::uint32_t> word{5};
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::uring_service::install(ctx, {.use_futex_wait = use_futex_wait});
    co_await coproc::async_futex_wait(ctx.get_executor(), word, 4, asio::use_awaitable);
  });
}

TEST_CASE("a futex wait can be cancelled", "[futex_waiter]") {
  bool use_futex_wait = GENERATE(true, false);
  auto region = coproc::mapped_region::create(4096);
  auto& word = word_in(region);
  word.store(0);
  asio::io_context ctx;
  coproc::uring_service::install(ctx, {.use_futex_wait = use_futex_wait});
  asio::cancellation_signal signal;
  std::error_code result;
  bool done = false;
  coproc::async_futex_wait(ctx.get_executor(), word, 0,
                           asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec) {
                             result = ec;
                             done = true;
                           }));
  ctx.poll();
  CHECK(!done);
  signal.emit(asio::cancellation_type::terminal);
  CHECK(!done);
  ctx.run_for(std::chrono::seconds(10));
  CHECK(done);
  CHECK(result == asio::error::operation_aborted);
}

TEST_CASE("without FUTEX_WAIT a futex wait wakes through a watcher thread, not a timer",
          "[futex_waiter]") {
  // The fallback once polled the word on a timer (50 us doubling to 1 ms): a
  // wake-up with nothing else happening took up to a millisecond. The watcher
  // sleeps in FUTEX_WAIT, so a wake arrives once the word changes; this test
  // waits on two words at once (two watcher threads) and cancels one.
  auto region = coproc::mapped_region::create(4096);
  auto& a = word_in(region);
  auto& b = *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(region.data() + 64));
  a.store(0);
  b.store(0);
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    auto& service = coproc::uring_service::install(ctx, {.use_futex_wait = false});
    CHECK(!service.has_futex_wait());
    asio::cancellation_signal cancel_b;
    std::error_code b_result;
    bool b_done = false;
    coproc::async_futex_wait(ctx.get_executor(), b, 0,
                             asio::bind_cancellation_slot(cancel_b.slot(), [&](std::error_code ec) {
                               b_result = ec;
                               b_done = true;
                             }));
    auto child = coproc::child_process::fork_child([&] {
      a.store(1);
      coproc::detail::futex_wake(a, 1);
    });
    while (a.load() == 0) {
      co_await coproc::async_futex_wait(ctx.get_executor(), a, 0, asio::use_awaitable);
    }
    CHECK(!b_done);
    cancel_b.emit(asio::cancellation_type::terminal);
    asio::steady_timer t(ctx, std::chrono::milliseconds(1));
    while (!b_done) {
      co_await t.async_wait(asio::use_awaitable);
      t.expires_after(std::chrono::milliseconds(1));
    }
    CHECK(b_result == asio::error::operation_aborted);
    co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
  });
}
