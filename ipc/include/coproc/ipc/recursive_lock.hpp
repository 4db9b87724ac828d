#pragma once
/// A re-entrant process-shared lock (Python's multiprocessing.RLock).

#include <chrono>
#include <cstdint>
#include <limits>
#include <system_error>

#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/shared_memory.hpp"

namespace coproc {

/// Like coproc::lock (same owner-death recovery, same state layout), but the
/// holding thread may lock it again; it is released when unlock() has been
/// called as often as lock(). Ownership is per thread, so two coroutines on
/// one loop thread count as one holder: between coroutines use coproc::lock.
/// Does not move or copy.
/// Thread safety: all members may be called concurrently from any thread or
/// process, except that unlock() belongs to the holding thread.
class recursive_lock {
 public:
  static constexpr std::size_t shared_size = sizeof(detail::lock_state);
  static constexpr std::size_t shared_alignment = alignof(detail::lock_state);

  /// An unlocked lock in its own small memfd region. Throws std::system_error.
  recursive_lock() : state_(detail::own_region) {}
  /// State at `offset` in `seg`; see coproc::lock.
  recursive_lock(shared_memory& seg, std::size_t offset, shm_init init = shm_init::create)
      : state_(seg, offset, init) {}

  recursive_lock(const recursive_lock&) = delete;
  recursive_lock& operator=(const recursive_lock&) = delete;

  /// Releases every level still held by the calling thread.
  ~recursive_lock() {
    if (detail::held_by_me(*state_)) {
      state_->depth = 0;
      detail::lock_release(*state_, detail::this_robust_thread());
    }
  }

  /// Blocks until held (or takes one more level). Returns
  /// coproc::errc::owner_died when recovered from a dead holder, else empty.
  std::error_code lock() {
    if (relock()) {
      return {};
    }
    auto r = detail::lock_acquire(*state_, nullptr);
    state_->depth = 1;
    return r == detail::acquire_result::recovered ? make_error_code(errc::owner_died)
                                                  : std::error_code{};
  }

  /// Never blocks; true when held (now or already by this thread).
  bool try_lock() noexcept {
    if (relock()) {
      return true;
    }
    if (detail::lock_try_acquire(*state_, detail::this_robust_thread(), false) ==
        detail::acquire_result::busy) {
      return false;
    }
    state_->depth = 1;
    return true;
  }

  /// Blocks at most `d`; true when held.
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    if (relock()) {
      return true;
    }
    auto deadline = std::chrono::steady_clock::now() + d;
    if (detail::lock_acquire(*state_, &deadline) == detail::acquire_result::busy) {
      return false;
    }
    state_->depth = 1;
    return true;
  }

  /// Drops one level; the last one releases the lock. Throws std::system_error
  /// (operation_not_permitted) when the calling thread does not hold it.
  void unlock() {
    if (!detail::held_by_me(*state_)) {
      throw std::system_error(std::make_error_code(std::errc::operation_not_permitted),
                              "coproc::recursive_lock::unlock: not held by this thread");
    }
    if (--state_->depth == 0) {
      detail::lock_release(*state_, detail::this_robust_thread());
    }
  }

  /// Levels held by the calling thread (0 when it does not hold the lock).
  std::uint32_t depth() const noexcept { return detail::held_by_me(*state_) ? state_->depth : 0; }

  /// True while the current hold was recovered from a holder that died.
  bool owner_died() const noexcept { return state_->recovered != 0; }

  /// Acquires (or re-enters) without blocking the loop thread.
  /// Completion signature: void(std::error_code): empty, coproc::errc::owner_died
  /// (held), or asio::error::operation_aborted (not held). Runs on the
  /// handler's associated executor; never completes inside this call.
  /// Cancellation: terminal, partial, total.
  template <class Token>
  auto async_lock(Token&& token) {
    return detail::async_futex_loop(machine{{state_.get()}}, std::forward<Token>(token));
  }

 private:
  struct machine : detail::lock_machine {
    detail::futex_step step() {
      if (detail::held_by_me(*s)) {
        ++s->depth;
        return detail::futex_step::finish();
      }
      detail::futex_step r = lock_machine::step();
      if (r.done) {
        s->depth = 1;
      }
      return r;
    }
  };

  bool relock() noexcept {
    if (detail::held_by_me(*state_)) {
      ++state_->depth;
      return true;
    }
    return false;
  }

  detail::state_holder<detail::lock_state> state_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<recursive_lock> = true;

}  // namespace coproc
