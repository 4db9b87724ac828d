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
#include "coproc/runtime/uring_service.hpp"

namespace coproc {
namespace detail {

struct futex_wait_impl {
  static constexpr bool waits_on_futex = true;

  futex_wait_impl(std::atomic<std::uint32_t>& w, std::uint32_t e) noexcept
      : word(&w), expected(e) {}
  io_uring_sqe prepare() noexcept {
    io_uring_sqe sqe{};
    prep_futex_wait(&sqe, word, expected);
    return sqe;
  }
  reactor_plan plan() const { return reactor_plan::futex(*word, expected); }
  int attempt() noexcept { return -EAGAIN; }  // never called: the watcher waits
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

}  // namespace coproc
