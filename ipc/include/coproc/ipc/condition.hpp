#pragma once
/// A process-shared condition variable tied to a coproc::lock (Python's
/// multiprocessing.Condition).

#include <chrono>
#include <climits>
#include <cstdint>
#include <optional>
#include <system_error>

#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/ipc/lock.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/shared_memory.hpp"

namespace coproc {
namespace detail {

struct alignas(64) condition_state {
  std::atomic<std::uint32_t> seq{0};  ///< bumped by every notify: the futex word
  std::atomic<std::uint32_t> waiters{0};
};

}  // namespace detail

/// Waiters release the lock, sleep until notified, and hold the lock again
/// when they return (also after a timeout, a cancellation or an error).
/// Wake-ups may be spurious and are not FIFO: wait in a loop on the
/// predicate (or use the predicate overloads).
///
/// By default it owns its lock (get_lock()); it can also use an existing
/// coproc::lock, which must outlive it. Does not move or copy.
/// Thread safety: all members may be called concurrently from any thread or
/// process; wait*() require the calling thread to hold the lock.
class condition {
 public:
  static constexpr std::size_t shared_size = sizeof(detail::condition_state) + lock::shared_size;
  static constexpr std::size_t shared_alignment = alignof(detail::condition_state);

  /// A condition with its own lock, in one memfd region. Throws std::system_error.
  condition() : own_lock_(std::in_place), lock_(&*own_lock_), state_(detail::own_region) {}

  /// A condition over `l` (which must outlive it).
  explicit condition(coproc::lock& l) : lock_(&l), state_(detail::own_region) {}

  /// State (and its own lock) at `offset` in `seg`; see coproc::lock.
  condition(shared_memory& seg, std::size_t offset, shm_init init = shm_init::create)
      : own_lock_(std::in_place, seg, offset, init),
        lock_(&*own_lock_),
        state_(seg, offset + lock::shared_size, init) {}

  condition(const condition&) = delete;
  condition& operator=(const condition&) = delete;

  coproc::lock& get_lock() const noexcept { return *lock_; }

  /// Releases the lock, sleeps until notified, re-acquires the lock. Returns
  /// coproc::errc::owner_died when the re-acquisition recovered the lock from
  /// a dead holder. Throws std::system_error (operation_not_permitted) when
  /// the calling thread does not hold the lock.
  std::error_code wait() { return wait_until(nullptr).second; }

  /// Waits until `pred()` is true (checked with the lock held).
  template <class Predicate>
  void wait(Predicate pred) {
    while (!pred()) {
      wait();
    }
  }

  /// Like wait(), for at most `d`; false on timeout (the lock is held again
  /// either way).
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& d) {
    auto deadline = std::chrono::steady_clock::now() + d;
    return wait_until(&deadline).first;
  }

  /// Waits until `pred()` or `d` passed; returns the last value of pred().
  template <class Rep, class Period, class Predicate>
  bool wait_for(const std::chrono::duration<Rep, Period>& d, Predicate pred) {
    auto deadline = std::chrono::steady_clock::now() + d;
    while (!pred()) {
      if (!wait_until(&deadline).first) {
        return pred();
      }
    }
    return true;
  }

  /// Wakes one waiter (if any). Call with or without the lock held; to not
  /// miss a waiter that is about to wait, hold it.
  void notify_one() noexcept { notify(1); }
  /// Wakes every waiter.
  void notify_all() noexcept { notify(INT_MAX); }

  /// Releases the lock and waits for a notification without blocking the
  /// loop thread; the lock is held again when the handler runs (whatever the
  /// outcome), by the thread that runs the completion.
  /// Completion signature: void(std::error_code): empty,
  /// coproc::errc::owner_died (re-acquired from a dead holder), or
  /// asio::error::operation_aborted (cancelled; lock held again).
  /// Throws std::system_error (operation_not_permitted) at once when the
  /// calling thread does not hold the lock. Runs on the handler's associated
  /// executor; never completes inside this call. Cancellation: terminal,
  /// partial, total (it cuts the wait short; re-acquiring is not cancellable).
  template <class Token>
  auto async_wait(Token&& token) {
    check_held();
    return detail::async_futex_loop(machine{state_.get(), {&lock_->state()}},
                                    std::forward<Token>(token));
  }

 private:
  void check_held() const {
    if (!detail::held_by_me(lock_->state())) {
      throw std::system_error(std::make_error_code(std::errc::operation_not_permitted),
                              "coproc::condition: wait without holding the lock");
    }
  }

  void notify(int n) noexcept {
    detail::condition_state& s = *state_;
    if (s.waiters.load(std::memory_order_seq_cst) != 0) {
      s.seq.fetch_add(1, std::memory_order_seq_cst);
      detail::futex_wake(s.seq, n);
    }
  }

  struct machine {
    detail::condition_state* s;
    detail::lock_machine relock;
    int phase = 0;  // 0: not yet waiting, 1: waiting, 2: re-acquiring the lock
    bool aborted = false;
    std::uint32_t seen = 0;

    detail::futex_step step() {
      if (phase == 0) {
        seen = s->seq.load(std::memory_order_seq_cst);
        s->waiters.fetch_add(1, std::memory_order_seq_cst);
        detail::lock_release(*relock.s, detail::this_robust_thread());
        phase = 1;
        return detail::futex_step::wait(s->seq, seen);
      }
      detail::futex_step r = relock.step();
      if (r.done && aborted) {
        r.ec = asio::error::operation_aborted;
      }
      return r;
    }
    void after_wait() noexcept {
      if (phase == 1) {
        s->waiters.fetch_sub(1, std::memory_order_relaxed);
        phase = 2;
      }
    }
    bool abandon() noexcept {
      if (phase == 2 && !aborted && !relock.contended) {
        // Cut short while waiting for a notification: a notify_one may have
        // woken this waiter, so pass it on, then re-acquire the lock.
        if (s->seq.load(std::memory_order_relaxed) != seen) {
          detail::futex_wake(s->seq, 1);
        }
        aborted = true;
        return false;
      }
      relock.abandon();
      return true;
    }
    bool cancellable() const noexcept {
      return phase < 2 || (phase == 2 && !aborted && !relock.contended);
    }
  };

  // {notified in time, re-acquisition status}
  std::pair<bool, std::error_code> wait_until(
      const std::chrono::steady_clock::time_point* deadline) {
    check_held();
    detail::condition_state& s = *state_;
    std::uint32_t seen = s.seq.load(std::memory_order_seq_cst);
    s.waiters.fetch_add(1, std::memory_order_seq_cst);
    detail::lock_release(lock_->state(), detail::this_robust_thread());
    bool in_time = true;
    timespec ts{};
    if (deadline && !detail::remaining(*deadline, ts)) {
      in_time = false;
    } else if (detail::futex_wait(s.seq, seen, deadline ? &ts : nullptr) == ETIMEDOUT) {
      in_time = false;
    }
    s.waiters.fetch_sub(1, std::memory_order_relaxed);
    return {in_time, lock_->lock()};
  }

  std::optional<coproc::lock> own_lock_;
  coproc::lock* lock_;
  detail::state_holder<detail::condition_state> state_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<condition> = true;

}  // namespace coproc
