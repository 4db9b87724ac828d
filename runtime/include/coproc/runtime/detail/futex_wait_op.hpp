#pragma once
// The futex wait as an io operation: its SQE for the ring, its plan for the
// epoll backend (its doorbell's eventfd, or the futex watcher) and its result
// (coproc::async_futex_wait).

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <system_error>
#include <tuple>

#include "coproc/runtime/detail/io_op.hpp"
#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/detail/sleep_flag.hpp"
#include "coproc/runtime/detail/uring_ops.hpp"
#include "coproc/runtime/futex_doorbell.hpp"

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
  // attempt joins the listeners, then every attempt re-checks the word: the
  // waker changes the word before it looks at the count (sleep_flag's
  // handshake), so a ring this listener misses shows as a changed word here.
  int attempt() noexcept {
    if (!listening) {
      sleep_flag(*listeners).join();
      listening = true;
    }
    return word->load(std::memory_order_acquire) != expected ? 0 : -EAGAIN;
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
      sleep_flag(*listeners).leave();
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

}  // namespace coproc
