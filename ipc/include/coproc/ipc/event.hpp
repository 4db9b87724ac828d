#pragma once
/// A process-shared event flag (Python's multiprocessing.Event).

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

// word = generation << 1 | flag. set() starts a new generation, so a waiter
// woken by set() returns even if clear() ran before it looked (as in Python).
struct alignas(64) event_state {
  std::atomic<std::uint32_t> word{0};
  std::atomic<std::uint32_t> waiters{0};
};

inline bool event_released(std::uint32_t now, std::uint32_t seen) noexcept {
  return (now & 1) != 0 || (now >> 1) != (seen >> 1);
}

}  // namespace detail

/// A flag shared between processes: set() wakes every waiter; wait() returns
/// at once while it is set. Does not move or copy.
/// Thread safety: all members may be called concurrently from any thread or process.
class event {
 public:
  static constexpr std::size_t shared_size = sizeof(detail::event_state);
  static constexpr std::size_t shared_alignment = alignof(detail::event_state);

  /// A cleared event in its own memfd region. Throws std::system_error.
  event() : state_(detail::own_region) {}
  /// State at `offset` in `seg`; see coproc::lock.
  event(shared_memory& seg, std::size_t offset, shm_init init = shm_init::create)
      : state_(seg, offset, init) {}

  event(const event&) = delete;
  event& operator=(const event&) = delete;

  /// Sets the flag and wakes all waiters (of every process).
  void set() noexcept {
    detail::event_state& s = *state_;
    std::uint32_t v = s.word.load(std::memory_order_relaxed);
    do {
      if ((v & 1) != 0) {
        return;
      }
    } while (
        !s.word.compare_exchange_weak(v, (((v >> 1) + 1) << 1) | 1, std::memory_order_seq_cst));
    if (s.waiters.load(std::memory_order_seq_cst) != 0) {
      detail::futex_wake(s.word, INT_MAX);
    }
  }

  /// Clears the flag.
  void clear() noexcept { state_->word.fetch_and(~std::uint32_t{1}, std::memory_order_seq_cst); }

  /// Waiters currently asleep or about to sleep (a snapshot, for diagnostics
  /// and tests).
  std::uint32_t n_waiting() const noexcept {
    return state_->waiters.load(std::memory_order_relaxed);
  }

  bool is_set() const noexcept { return (state_->word.load(std::memory_order_acquire) & 1) != 0; }

  /// Blocks until the flag is set (or a set() happened since the call).
  void wait() { wait_until(nullptr); }

  /// Like wait(), for at most `d`; false on timeout (Python's wait(timeout)).
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& d) {
    auto deadline = std::chrono::steady_clock::now() + d;
    return wait_until(&deadline);
  }

  /// Waits for the flag without blocking the loop thread.
  /// Completion signature: void(std::error_code): empty once set, or
  /// asio::error::operation_aborted. Runs on the handler's associated
  /// executor; never completes inside this call. Cancellation: terminal,
  /// partial, total.
  template <class Token>
  auto async_wait(Token&& token) {
    return detail::async_futex_loop(machine{state_.get()}, std::forward<Token>(token));
  }

 private:
  struct machine {
    detail::event_state* s;
    bool started = false;
    bool waiting = false;
    std::uint32_t seen = 0;
    detail::futex_step step() {
      std::uint32_t v = s->word.load(std::memory_order_acquire);
      if (!started) {
        started = true;
        seen = v & ~std::uint32_t{1};
      }
      if (detail::event_released(v, seen)) {
        return detail::futex_step::finish();
      }
      s->waiters.fetch_add(1, std::memory_order_seq_cst);
      waiting = true;
      return detail::futex_step::wait(s->word, v);
    }
    void after_wait() noexcept {
      if (waiting) {
        s->waiters.fetch_sub(1, std::memory_order_relaxed);
        waiting = false;
      }
    }
    bool abandon() noexcept { return true; }  // set() wakes everyone: nothing to pass on
    bool cancellable() const noexcept { return true; }
  };

  bool wait_until(const std::chrono::steady_clock::time_point* deadline) {
    detail::event_state& s = *state_;
    std::uint32_t seen = s.word.load(std::memory_order_acquire);
    if ((seen & 1) != 0) {
      return true;
    }
    for (;;) {
      std::uint32_t v = s.word.load(std::memory_order_acquire);
      if (detail::event_released(v, seen)) {
        return true;
      }
      timespec ts{};
      if (deadline && !detail::remaining(*deadline, ts)) {
        return false;
      }
      s.waiters.fetch_add(1, std::memory_order_seq_cst);
      detail::futex_wait(s.word, v, deadline ? &ts : nullptr);
      s.waiters.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  detail::state_holder<detail::event_state> state_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<event> = true;

}  // namespace coproc
