#pragma once
/// A process-shared barrier for a fixed number of parties (Python's
/// multiprocessing.Barrier).

#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <system_error>

#include "coproc/ipc/detail/barrier_state.hpp"
#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/shared_memory.hpp"

namespace coproc {

/// `parties` processes (or threads, or coroutines) meet: wait() returns once
/// all have called it, then the barrier is ready for the next round.
///
/// A party that times out or is cancelled while waiting breaks the barrier
/// (as in Python): every waiter, present and future, fails with
/// coproc::errc::barrier_broken until reset(). abort() breaks it on purpose.
/// A party that dies while waiting is not detected: the others wait until
/// their own timeout or cancellation.
/// Does not move or copy.
/// Thread safety: all members may be called concurrently from any thread or process.
class barrier {
 public:
  static constexpr std::size_t shared_size = sizeof(detail::barrier_state);
  static constexpr std::size_t shared_alignment = alignof(detail::barrier_state);

  /// A barrier for `parties` (>= 1) in its own memfd region. Throws
  /// std::invalid_argument for 0, std::system_error from the system calls.
  explicit barrier(std::uint32_t parties) : state_(detail::own_region, check(parties)) {}
  /// State at `offset` in `seg`; see coproc::lock. `parties` is used by create.
  barrier(shared_memory& seg, std::size_t offset, shm_init init, std::uint32_t parties)
      : state_(seg, offset, init, check(parties)) {}

  barrier(const barrier&) = delete;
  barrier& operator=(const barrier&) = delete;

  /// Waits for all parties. Returns this party's arrival index in
  /// [0, parties). Throws std::system_error(coproc::errc::barrier_broken).
  std::size_t wait() { return wait_until(nullptr); }

  /// Like wait(), for at most `d`; on timeout breaks the barrier and throws
  /// std::system_error(coproc::errc::barrier_broken).
  template <class Rep, class Period>
  std::size_t wait_for(const std::chrono::duration<Rep, Period>& d) {
    auto deadline = std::chrono::steady_clock::now() + d;
    return wait_until(&deadline);
  }

  /// Waits for all parties without blocking the loop thread.
  /// Completion signature: void(std::error_code, std::size_t index):
  /// coproc::errc::barrier_broken, or asio::error::operation_aborted (which
  /// breaks the barrier). Runs on the handler's associated executor; never
  /// completes inside this call. Cancellation: terminal, partial, total.
  template <class Token>
  auto async_wait(Token&& token) {
    return detail::async_futex_loop(machine{state_.get()}, std::forward<Token>(token));
  }

  /// Breaks the barrier: current and future waiters fail until reset().
  void abort() noexcept { detail::barrier_break(*state_); }

  /// Returns a broken barrier to its initial state. Call it only while no
  /// party waits.
  void reset() noexcept {
    detail::barrier_state& s = *state_;
    s.arrived.store(0, std::memory_order_relaxed);
    std::uint32_t g = s.gen.load(std::memory_order_relaxed);
    s.gen.store(((g & ~detail::barrier_broken_bit) + 1) & ~detail::barrier_broken_bit,
                std::memory_order_release);
  }

  bool broken() const noexcept {
    return (state_->gen.load(std::memory_order_acquire) & detail::barrier_broken_bit) != 0;
  }
  std::uint32_t parties() const noexcept { return state_->parties; }
  /// Parties waiting now (a snapshot).
  std::uint32_t n_waiting() const noexcept {
    return state_->arrived.load(std::memory_order_relaxed);
  }

 private:
  static std::uint32_t check(std::uint32_t parties) {
    if (parties == 0) {
      throw std::invalid_argument("coproc::barrier: parties must be at least 1");
    }
    return parties;
  }

  [[noreturn]] static void throw_broken() {
    throw std::system_error(make_error_code(errc::barrier_broken), "coproc::barrier::wait");
  }

  struct machine {
    detail::barrier_state* s;
    bool arrived = false;
    std::uint32_t seen = 0;
    std::size_t index = 0;
    detail::futex_step step() {
      if (!arrived) {
        seen = s->gen.load(std::memory_order_acquire);
        if ((seen & detail::barrier_broken_bit) != 0) {
          return detail::futex_step::finish(errc::barrier_broken);
        }
        arrived = true;
        bool broken = false;
        index = detail::barrier_arrive(*s, seen, broken);
        if (index + 1 == s->parties) {
          return broken ? detail::futex_step::finish(errc::barrier_broken)
                        : detail::futex_step::finish();
        }
      }
      std::uint32_t v = s->gen.load(std::memory_order_acquire);
      if (v == seen) {
        return detail::futex_step::wait(s->gen, seen);
      }
      return (v & detail::barrier_broken_bit) != 0
                 ? detail::futex_step::finish(errc::barrier_broken)
                 : detail::futex_step::finish();
    }
    void after_wait() noexcept {}
    bool abandon() noexcept {
      // The arrival cannot be taken back: a round without this party would
      // trip with too few, so break the barrier (as a Python timeout does).
      if (arrived && s->gen.load(std::memory_order_acquire) == seen) {
        detail::barrier_break(*s);
      }
      return true;
    }
    bool cancellable() const noexcept { return true; }
    std::size_t value() const noexcept { return index; }
  };

  std::size_t wait_until(const std::chrono::steady_clock::time_point* deadline) {
    detail::barrier_state& s = *state_;
    std::uint32_t seen = s.gen.load(std::memory_order_acquire);
    if ((seen & detail::barrier_broken_bit) != 0) {
      throw_broken();
    }
    bool broken = false;
    std::uint32_t idx = detail::barrier_arrive(s, seen, broken);
    if (broken) {
      throw_broken();
    }
    if (idx + 1 == s.parties) {
      return idx;
    }
    for (;;) {
      std::uint32_t v = s.gen.load(std::memory_order_acquire);
      if (v != seen) {
        if ((v & detail::barrier_broken_bit) != 0) {
          throw_broken();
        }
        return idx;
      }
      timespec ts{};
      if (deadline && !detail::remaining(*deadline, ts)) {
        detail::barrier_break(s);
        throw_broken();
      }
      detail::futex_wait(s.gen, seen, deadline ? &ts : nullptr);
    }
  }

  detail::state_holder<detail::barrier_state> state_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<barrier> = true;

}  // namespace coproc
