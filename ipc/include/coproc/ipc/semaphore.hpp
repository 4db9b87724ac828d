#pragma once
/// Process-shared counting semaphores (Python's multiprocessing.Semaphore and
/// BoundedSemaphore), with blocking and Asio async forms.

#include <chrono>
#include <climits>
#include <cstdint>
#include <system_error>

#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/shared_memory.hpp"

namespace coproc {
namespace detail {

struct alignas(64) semaphore_state {
  explicit semaphore_state(std::uint32_t v, std::uint32_t b) noexcept : value(v), bound(b) {}
  std::atomic<std::uint32_t> value;
  std::atomic<std::uint32_t> waiters{0};
  std::uint32_t bound;  ///< 0: unbounded
};

inline bool semaphore_try_take(semaphore_state& s) noexcept {
  std::uint32_t v = s.value.load(std::memory_order_relaxed);
  while (v > 0) {
    if (s.value.compare_exchange_weak(v, v - 1, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

}  // namespace detail

/// A counter shared between processes: acquire() takes one unit, waiting
/// while there is none; release() gives units back. Not owned by anyone, so
/// a unit taken by a process that dies is not returned (as in Python).
/// Does not move or copy.
/// Thread safety: all members may be called concurrently from any thread or process.
class semaphore {
 public:
  static constexpr std::size_t shared_size = sizeof(detail::semaphore_state);
  static constexpr std::size_t shared_alignment = alignof(detail::semaphore_state);
  /// The largest count a semaphore holds.
  static constexpr std::uint32_t max_value = INT_MAX;

  /// A semaphore holding `value` units, in its own memfd region.
  /// Throws std::system_error naming the failing call.
  explicit semaphore(std::uint32_t value = 1) : semaphore(value, 0) {}

  /// State at `offset` in `seg` (see coproc::lock); `value` is used by create.
  semaphore(shared_memory& seg, std::size_t offset, shm_init init, std::uint32_t value = 1)
      : state_(seg, offset, init, value, std::uint32_t{0}) {}

  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;

  /// Takes one unit, blocking while none is available.
  void acquire() {
    while (!detail::semaphore_try_take(*state_)) {
      wait_nonzero(nullptr);
    }
  }

  /// Takes one unit if available; never blocks.
  bool try_acquire() noexcept { return detail::semaphore_try_take(*state_); }

  /// Takes one unit, blocking at most `d`; false on timeout.
  template <class Rep, class Period>
  bool try_acquire_for(const std::chrono::duration<Rep, Period>& d) {
    auto deadline = std::chrono::steady_clock::now() + d;
    while (!detail::semaphore_try_take(*state_)) {
      if (!wait_nonzero(&deadline)) {
        return detail::semaphore_try_take(*state_);
      }
    }
    return true;
  }

  /// Gives back `n` units and wakes as many waiters. Throws std::system_error
  /// with std::errc::value_too_large when the count would pass the bound
  /// (bounded_semaphore) or max_value; the count is then unchanged.
  void release(std::uint32_t n = 1) {
    detail::semaphore_state& s = *state_;
    std::uint32_t limit = s.bound != 0 ? s.bound : max_value;
    std::uint32_t v = s.value.load(std::memory_order_relaxed);
    do {
      if (n > limit || v > limit - n) {
        throw std::system_error(std::make_error_code(std::errc::value_too_large),
                                "coproc::semaphore::release: released too many times");
      }
    } while (!s.value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst));
    if (s.waiters.load(std::memory_order_seq_cst) != 0) {
      detail::futex_wake(s.value, static_cast<int>(n));
    }
  }

  /// The current count (a snapshot).
  std::uint32_t value() const noexcept { return state_->value.load(std::memory_order_relaxed); }

  /// Takes one unit without blocking the loop thread.
  /// Completion signature: void(std::error_code): empty (one unit taken) or
  /// asio::error::operation_aborted (none taken). Runs on the handler's
  /// associated executor; never completes inside this call.
  /// Cancellation: terminal, partial, total.
  template <class Token>
  auto async_acquire(Token&& token) {
    return detail::async_futex_loop(machine{state_.get()}, std::forward<Token>(token));
  }

 protected:
  semaphore(std::uint32_t value, std::uint32_t bound) : state_(detail::own_region, value, bound) {
    if (value > max_value) {
      throw std::system_error(std::make_error_code(std::errc::value_too_large),
                              "coproc::semaphore: initial value too large");
    }
  }

 private:
  struct machine {
    detail::semaphore_state* s;
    bool waiting = false;
    detail::futex_step step() {
      if (detail::semaphore_try_take(*s)) {
        return detail::futex_step::finish();
      }
      s->waiters.fetch_add(1, std::memory_order_seq_cst);
      waiting = true;
      return detail::futex_step::wait(s->value, 0);
    }
    void after_wait() noexcept {
      if (waiting) {
        s->waiters.fetch_sub(1, std::memory_order_relaxed);
        waiting = false;
      }
    }
    bool abandon() noexcept {
      // A release may have woken this waiter: hand the wake-up on.
      if (s->value.load(std::memory_order_relaxed) != 0 &&
          s->waiters.load(std::memory_order_relaxed) != 0) {
        detail::futex_wake(s->value, 1);
      }
      return true;
    }
    bool cancellable() const noexcept { return true; }
  };

  // Sleeps while the count is 0; false once `deadline` passed.
  bool wait_nonzero(const std::chrono::steady_clock::time_point* deadline) {
    detail::semaphore_state& s = *state_;
    timespec ts{};
    if (deadline && !detail::remaining(*deadline, ts)) {
      return false;
    }
    s.waiters.fetch_add(1, std::memory_order_seq_cst);
    detail::futex_wait(s.value, 0, deadline ? &ts : nullptr);
    s.waiters.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }

  detail::state_holder<detail::semaphore_state> state_;
};

/// A semaphore whose count may never exceed its initial value: one release()
/// too many throws std::system_error (std::errc::value_too_large), as
/// Python's BoundedSemaphore raises ValueError.
class bounded_semaphore : public semaphore {
 public:
  explicit bounded_semaphore(std::uint32_t value = 1) : semaphore(value, value) {}
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<semaphore> = true;
template <>
inline constexpr bool is_process_shared_v<bounded_semaphore> = true;

}  // namespace coproc
