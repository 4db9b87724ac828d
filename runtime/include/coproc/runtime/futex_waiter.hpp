#pragma once
/// coproc::async_futex_wait: wait on a 32-bit futex word in shared memory
/// without blocking the event loop.

#include <algorithm>
#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_state.hpp>
#include <asio/compose.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <system_error>
#include <tuple>
#include <type_traits>

#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/detail/uring_handler_op.hpp"
#include "coproc/runtime/detail/uring_ops.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc {
namespace detail {

struct futex_wait_impl {
  futex_wait_impl(std::atomic<std::uint32_t>& w, std::uint32_t e) noexcept
      : word(&w), expected(e) {}
  io_uring_sqe prepare() noexcept {
    io_uring_sqe sqe{};
    prep_futex_wait(&sqe, word, expected);
    return sqe;
  }
  std::tuple<std::error_code> result(int res, bool cancel_requested) const noexcept {
    // -EAGAIN: the word no longer held `expected` when the kernel looked: that
    // is a wake-up too (the caller re-checks the word either way).
    if (res >= 0 || res == -EAGAIN) {
      return {std::error_code()};
    }
    return {uring_error(res, cancel_requested)};
  }
  std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
};

/// Fallback without IORING_OP_FUTEX_WAIT: polls the word on a steady_timer,
/// the interval growing from 50 us to 1 ms while nothing changes.
struct futex_poll_op {
  std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
  std::unique_ptr<asio::steady_timer> timer;
  std::chrono::microseconds interval{50};
  bool started = false;

  template <class Self>
  void operator()(Self& self, std::error_code ec = {}) {
    if (!started) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      // The first check is deferred too: completion never runs inside the
      // initiating function.
      timer->expires_after(std::chrono::microseconds(0));
      timer->async_wait(std::move(self));
      return;
    }
    if (ec) {
      self.complete(ec);
      return;
    }
    if (word->load(std::memory_order_acquire) != expected) {
      self.complete(std::error_code());
      return;
    }
    // A cancellation that arrived while the timer's completion was already
    // queued did not abort that wait: honour it here, or polling goes on.
    if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none) {
      self.complete(asio::error::operation_aborted);
      return;
    }
    timer->expires_after(interval);
    interval = std::min<std::chrono::microseconds>(interval * 2, std::chrono::milliseconds(1));
    timer->async_wait(std::move(self));
  }
};

}  // namespace detail

/// Waits until `word` is woken (FUTEX_WAKE from any process, on a word in
/// shared memory: the futex is not private) or no longer holds `expected`.
/// Like futex(2) it may also complete spuriously: re-check the word.
///
/// Uses IORING_OP_FUTEX_WAIT (kernel 6.7+, FUTEX2_SIZE_U32) on the executor's
/// uring_service; without it, polls the word on a timer (50 us growing to
/// 1 ms), so wake-ups still arrive but later.
///
/// Completion signature: void(std::error_code).
/// Cancellation: terminal, partial, total (operation_aborted).
/// `word` must stay valid until completion.
/// Thread safety: may be started from any thread.
template <class Token>
auto async_futex_wait(const asio::any_io_executor& ex, std::atomic<std::uint32_t>& word,
                      std::uint32_t expected, Token&& token) {
  return asio::async_initiate<Token, void(std::error_code)>(
      [](auto&& handler, const asio::any_io_executor& io_ex, std::atomic<std::uint32_t>* w,
         std::uint32_t e) {
        uring_service& service = uring_service::of(io_ex);
        if (service.has_futex_wait()) {
          detail::launch_uring_op<detail::futex_wait_impl>(
              service, io_ex, std::forward<decltype(handler)>(handler), *w, e);
          return;
        }
        auto timer = std::make_unique<asio::steady_timer>(io_ex);
        auto& timer_ref = *timer;
        asio::async_compose<std::decay_t<decltype(handler)>, void(std::error_code)>(
            detail::futex_poll_op{w, e, std::move(timer)}, handler, timer_ref);
      },
      token, ex, &word, expected);
}

}  // namespace coproc
