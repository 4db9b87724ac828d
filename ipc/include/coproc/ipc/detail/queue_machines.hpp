#pragma once
// coproc::queue's async machines (detail::futex_loop_op drives them): take a
// lock without blocking the loop, run the locked step, or arm a doorbell and
// wait through the loop. Out-of-line members of queue<T>, included by
// coproc/ipc/queue.hpp.

#include "coproc/ipc/queue.hpp"

namespace coproc {

// Shared shape: take a lock without blocking (waiting on its word through
// the loop when busy), run the locked step, or arm a doorbell and wait.
template <class T>
struct queue<T>::machine_base {
  queue* q;
  bool lock_contended = false;
  detail::lock_state* waiting_lock = nullptr;

  // Acquired: true. Busy: fills `wait` with the lock word to wait on.
  bool try_lock(detail::lock_state& l, detail::futex_step& wait) {
    detail::robust_thread& t = detail::this_robust_thread();
    for (;;) {
      if (detail::lock_try_acquire(l, t, lock_contended) != detail::acquire_result::busy) {
        lock_contended = false;
        return true;
      }
      std::uint32_t v = detail::lock_mark_waiting(l);
      if (v != 0) {
        lock_contended = true;
        waiting_lock = &l;
        wait = detail::futex_step::wait(l.word, v);
        return false;
      }
    }
  }
  void after_wait() noexcept {}
  bool abandon() noexcept {
    // The lock's unlock wakes one waiter: hand its wake-up on. Doorbells
    // wake everyone, so nothing is owed there.
    if (waiting_lock != nullptr) {
      detail::lock_pass_on(*waiting_lock);
    }
    return true;
  }
  bool cancellable() const noexcept { return true; }
};

template <class T>
struct queue<T>::put_machine : machine_base {
  put_machine(queue* owner, T v) : machine_base{owner}, value(std::move(v)) {}
  T value;
  std::size_t n = 0;
  bool sized = false;

  detail::futex_step step() {
    queue& qu = *this->q;
    try {
      if (!sized) {
        n = qu.checked_size(value);
        sized = true;
      }
      for (;;) {
        this->waiting_lock = nullptr;
        detail::futex_step wait;
        if (!this->try_lock(qu.s_->put_lock, wait)) {
          return wait;
        }
        put_outcome r;
        std::uint64_t seen = 0;
        {
          detail::lock_hold hold(qu.s_->put_lock);
          r = qu.put_locked(value, n, seen);
        }
        if (r == put_outcome::done) {
          qu.ring_not_empty();
          return detail::futex_step::finish();
        }
        if (r == put_outcome::closed) {
          return detail::futex_step::finish(errc::queue_closed);
        }
        const std::uint32_t v = detail::bell_arm(qu.s_->not_full);
        if (!qu.writable_hint(seen)) {
          return detail::futex_step::wait(qu.s_->not_full, v, qu.door_, qu.s_->not_full_listeners);
        }
      }
    } catch (...) {
      return detail::futex_step::finish(code_of_current_exception());
    }
  }
};

template <class T>
template <class Out>
struct queue<T>::get_machine : machine_base {
  get_machine(queue* owner, std::size_t m) : machine_base{owner}, max(m) {}
  Out out;
  std::size_t max;

  detail::futex_step step() {
    queue& qu = *this->q;
    try {
      for (;;) {
        this->waiting_lock = nullptr;
        detail::futex_step wait;
        if (!this->try_lock(qu.s_->get_lock, wait)) {
          return wait;
        }
        get_outcome r;
        {
          detail::lock_hold hold(qu.s_->get_lock);
          r = qu.locked_get(out, max);
        }
        if (r == get_outcome::done) {
          qu.ring_not_full();
          return detail::futex_step::finish();
        }
        if (r == get_outcome::closed) {
          return detail::futex_step::finish(errc::queue_closed);
        }
        const std::uint32_t v = detail::bell_arm(qu.s_->not_empty);
        if (!qu.readable()) {
          return detail::futex_step::wait(qu.s_->not_empty, v, qu.door_,
                                          qu.s_->not_empty_listeners);
        }
      }
    } catch (...) {
      return detail::futex_step::finish(code_of_current_exception());
    }
  }
  auto value() {
    if constexpr (std::is_same_v<Out, std::vector<T>>) {
      return std::move(out);
    } else {
      return out ? std::move(*out) : T{};
    }
  }
};

}  // namespace coproc
