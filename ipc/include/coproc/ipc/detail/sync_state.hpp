#pragma once
// Shared-memory state of coproc's sync primitives and the futex-word lock
// protocol they share. Everything here is trivially copyable data at fixed
// offsets: no pointers other processes would follow, no vtables.

#include <time.h>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <system_error>

#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/robust_futex.hpp"
#include "coproc/ipc/shared_memory.hpp"
#include "coproc/runtime/detail/futex.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/mapped_region.hpp"

namespace coproc::detail {

/// A lock word (owner TID | FUTEX_WAITERS | FUTEX_OWNER_DIED, the kernel's
/// robust-futex format) plus fields only the holder writes. The robust list
/// entry lives somewhere in bytes [16, 64), where glibc's futex_offset puts it.
struct alignas(64) lock_state {
  std::atomic<std::uint32_t> word{0};
  std::uint32_t recovered = 0;  ///< holder-only: this hold recovered a dead holder's lock
  std::uint32_t depth = 0;      ///< holder-only: recursion depth (recursive_lock)
  std::uint32_t spare = 0;
  unsigned char robust_area[48] = {};
};
static_assert(sizeof(lock_state) == 64);

enum class acquire_result { busy, acquired, recovered };

/// One attempt to take a free word. `contended` sets FUTEX_WAITERS on success
/// (a thread that slept cannot know whether others still sleep).
inline acquire_result lock_try_acquire(lock_state& s, robust_thread& t, bool contended) noexcept {
  std::uint32_t v = s.word.load(std::memory_order_relaxed);
  if ((v & futex_tid_mask) != 0) {
    return acquire_result::busy;
  }
  robust_op_begin(t, s.word);
  do {
    std::uint32_t desired = t.tid | (contended ? futex_waiters : (v & futex_waiters));
    if (s.word.compare_exchange_weak(v, desired, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      robust_link(t, s.word);
      robust_op_done(t);
      bool died = (v & futex_owner_died) != 0;
      s.recovered = died ? 1 : 0;
      return died ? acquire_result::recovered : acquire_result::acquired;
    }
  } while ((v & futex_tid_mask) == 0);
  robust_op_done(t);
  return acquire_result::busy;
}

/// Makes sure the holder's unlock will wake a sleeper: sets FUTEX_WAITERS on
/// an owned word (returning the value to sleep on), or returns 0 when the
/// word is free (the caller retries the acquisition).
inline std::uint32_t lock_mark_waiting(lock_state& s) noexcept {
  std::uint32_t v = s.word.load(std::memory_order_relaxed);
  while ((v & futex_tid_mask) != 0) {
    if ((v & futex_waiters) != 0 ||
        s.word.compare_exchange_weak(v, v | futex_waiters, std::memory_order_relaxed)) {
      return v | futex_waiters;
    }
  }
  return 0;
}

/// A waiter that gives up (timeout, cancellation) may have consumed the one
/// wake-up an unlock sent: hand it on, so no sleeper is stranded.
inline void lock_pass_on(lock_state& s) noexcept {
  if (lock_mark_waiting(s) == 0) {
    futex_wake(s.word, 1);
  }
}

inline void lock_release(lock_state& s, robust_thread& t) noexcept {
  robust_op_begin(t, s.word);
  robust_unlink(t, s.word);
  s.recovered = 0;
  std::uint32_t old = s.word.exchange(0, std::memory_order_release);
  robust_op_done(t);
  if ((old & futex_waiters) != 0) {
    futex_wake(s.word, 1);
  }
}

inline bool held_by_me(const lock_state& s) noexcept {
  return (s.word.load(std::memory_order_relaxed) & futex_tid_mask) == this_robust_thread().tid;
}

/// Relative timeout to `deadline` for FUTEX_WAIT (CLOCK_MONOTONIC, as
/// steady_clock); false once it has passed.
inline bool remaining(std::chrono::steady_clock::time_point deadline, timespec& ts) noexcept {
  auto left = deadline - std::chrono::steady_clock::now();
  if (left <= std::chrono::steady_clock::duration::zero()) {
    return false;
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return true;
}

/// Blocking acquisition, with an optional deadline. Throws
/// resource_deadlock_would_occur when this thread already holds it.
inline acquire_result lock_acquire(lock_state& s,
                                   const std::chrono::steady_clock::time_point* deadline) {
  robust_thread& t = this_robust_thread();
  acquire_result r = lock_try_acquire(s, t, false);
  if (r != acquire_result::busy) {
    return r;
  }
  if ((s.word.load(std::memory_order_relaxed) & futex_tid_mask) == t.tid) {
    throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                            "coproc::lock: already held by this thread");
  }
  for (;;) {
    r = lock_try_acquire(s, t, true);
    if (r != acquire_result::busy) {
      return r;
    }
    std::uint32_t v = lock_mark_waiting(s);
    if (v == 0) {
      continue;
    }
    timespec ts{};
    if (deadline && !remaining(*deadline, ts)) {
      lock_pass_on(s);
      return acquire_result::busy;
    }
    futex_wait(s.word, v, deadline ? &ts : nullptr);
  }
}

/// The async acquisition: never blocks, waits through the event loop.
struct lock_machine {
  lock_state* s;
  bool contended = false;

  futex_step step() {
    robust_thread& t = this_robust_thread();
    for (;;) {
      acquire_result r = lock_try_acquire(*s, t, contended);
      if (r == acquire_result::acquired) {
        return futex_step::finish();
      }
      if (r == acquire_result::recovered) {
        return futex_step::finish(errc::owner_died);
      }
      std::uint32_t v = lock_mark_waiting(*s);
      if (v != 0) {
        contended = true;
        return futex_step::wait(s->word, v);
      }
    }
  }
  void after_wait() noexcept {}
  bool abandon() noexcept {
    lock_pass_on(*s);
    return true;
  }
  bool cancellable() const noexcept { return true; }
};

/// Where a primitive's shared state lives: its own small memfd region
/// (inherited across fork), or bytes of a caller's shared_memory segment.
struct own_region_t {};
inline constexpr own_region_t own_region{};

template <class State>
class state_holder {
 public:
  template <class... Args>
  explicit state_holder(own_region_t, Args&&... args)
      : region_(mapped_region::create(sizeof(State), "coproc-sync")),
        state_(::new (region_.data()) State(std::forward<Args>(args)...)) {}

  template <class... Args>
  state_holder(shared_memory& seg, std::size_t offset, shm_init init, Args&&... args)
      : state_(place(seg.at(offset, sizeof(State)), init, std::forward<Args>(args)...)) {}

  State& operator*() const noexcept { return *state_; }
  State* operator->() const noexcept { return state_; }
  State* get() const noexcept { return state_; }

 private:
  template <class... Args>
  static State* place(std::byte* where, shm_init init, Args&&... args) {
    if (reinterpret_cast<std::uintptr_t>(where) % alignof(State) != 0) {
      throw std::invalid_argument("coproc: shared state offset is not suitably aligned");
    }
    if (init == shm_init::create) {
      return ::new (where) State(std::forward<Args>(args)...);
    }
    return std::launder(reinterpret_cast<State*>(where));
  }

  mapped_region region_;
  State* state_;
};

}  // namespace coproc::detail
