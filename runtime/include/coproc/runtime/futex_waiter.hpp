#pragma once
/// coproc::async_futex_wait: wait on a 32-bit futex word in shared memory
/// without blocking the event loop.

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <atomic>
#include <cstdint>
#include <memory>
#include <system_error>
#include <tuple>
#include <type_traits>

#include "coproc/runtime/detail/io_handler_op.hpp"
#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/detail/uring_ops.hpp"
#include "coproc/runtime/futex_doorbell.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc {
namespace detail {

struct futex_wait_impl {
  static constexpr bool waits_on_futex = true;

  futex_wait_impl(std::atomic<std::uint32_t>& w, std::uint32_t e) noexcept
      : word(&w), expected(e) {}
  futex_wait_impl(std::atomic<std::uint32_t>& w, std::uint32_t e, const futex_doorbell& bell,
                  std::atomic<std::uint32_t>& l) noexcept
      : word(&w), expected(e), bell_fd(bell.native_handle()), listeners(&l) {}
  futex_wait_impl(const futex_wait_impl&) = delete;
  futex_wait_impl& operator=(const futex_wait_impl&) = delete;

  io_uring_sqe prepare() noexcept {
    io_uring_sqe sqe{};
    prep_futex_wait(&sqe, word, expected);
    return sqe;
  }
  reactor_plan plan() const {
    return bell_fd >= 0 ? reactor_plan::doorbell(bell_fd, *word, expected)
                        : reactor_plan::futex(*word, expected);
  }
  // Doorbell waits only (plain futex waits go to the watcher). The first
  // attempt announces the listener, then every attempt re-checks the word:
  // the waker changes the word before it reads the count (both seq_cst), so
  // a ring this listener misses shows as a changed word here.
  int attempt() noexcept {
    if (!listening) {
      listeners->fetch_add(1, std::memory_order_seq_cst);
      listening = true;
    }
    return word->load(std::memory_order_seq_cst) != expected ? 0 : -EAGAIN;
  }
  std::tuple<std::error_code> result(int res, bool cancel_requested) noexcept {
    stop_listening();
    // -EAGAIN: the word no longer held `expected` when the kernel looked: that
    // is a wake-up too (the caller re-checks the word either way).
    if (res >= 0 || res == -EAGAIN) {
      return {std::error_code()};
    }
    return {uring_error(res, cancel_requested)};
  }
  // Not in a destructor: at service shutdown the op is destroyed without a
  // result, possibly after the primitive (and the count) are gone; the count
  // then stays one too high (see futex_doorbell).
  void stop_listening() noexcept {
    if (listening) {
      listeners->fetch_sub(1, std::memory_order_seq_cst);
      listening = false;
    }
  }

  std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
  int bell_fd = -1;
  std::atomic<std::uint32_t>* listeners = nullptr;
  bool listening = false;
};

}  // namespace detail

/// Waits until `word` is woken (FUTEX_WAKE from any process, on a word in
/// shared memory: the futex is not private) or no longer holds `expected`.
/// Like futex(2) it may also complete spuriously: re-check the word.
///
/// Uses IORING_OP_FUTEX_WAIT (kernel 6.7+, FUTEX2_SIZE_U32) on the executor's
/// uring_service; without it (older kernel, or the epoll backend) a futex
/// watcher thread of the service sleeps on the word and hands the wake-up to
/// the io_context (detail/futex_watcher.hpp).
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
        detail::launch_io_op<detail::futex_wait_impl>(
            uring_service::of(io_ex), io_ex, std::forward<decltype(handler)>(handler), *w, e);
      },
      token, ex, &word, expected);
}

/// As above, for a word whose wakers also ring `bell` (futex_doorbell.hpp)
/// and keep `listeners` beside the word in shared memory: on the epoll
/// backend the loop then waits on the bell's eventfd instead of handing the
/// word to the watcher thread. With io_uring's FUTEX_WAIT it is the wait above.
/// `bell` and `listeners` must stay valid until completion.
template <class Token>
auto async_futex_wait(const asio::any_io_executor& ex, std::atomic<std::uint32_t>& word,
                      std::uint32_t expected, const futex_doorbell& bell,
                      std::atomic<std::uint32_t>& listeners, Token&& token) {
  return asio::async_initiate<Token, void(std::error_code)>(
      [](auto&& handler, const asio::any_io_executor& io_ex, std::atomic<std::uint32_t>* w,
         std::uint32_t e, const futex_doorbell* b, std::atomic<std::uint32_t>* l) {
        detail::launch_io_op<detail::futex_wait_impl>(uring_service::of(io_ex), io_ex,
                                                      std::forward<decltype(handler)>(handler), *w,
                                                      e, *b, *l);
      },
      token, ex, &word, expected, &bell, &listeners);
}

}  // namespace coproc
