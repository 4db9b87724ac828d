#pragma once
/// A lock shared between processes that survives its holder's death
/// (Python's multiprocessing.Lock), with blocking and Asio async forms.

#include <chrono>
#include <cstdint>
#include <system_error>

#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/shared_memory.hpp"

namespace coproc {

/// A mutual-exclusion lock whose state lives in shared memory: use it as
/// `coproc::lock` (the class is named process_lock only because C++ forbids
/// a member function named like its class, and this one has lock()).
///
/// Create it before fork() (children inherit its memfd mapping), or place it
/// in a shared_memory segment. It is owned by the acquiring *thread* (its TID
/// is stored in the futex word): unlock in the thread that locked.
///
/// When the holder dies (any cause, SIGKILL included) the kernel marks the
/// word (robust futex list) and wakes one waiter: the next acquirer gets the
/// lock together with an owner-died indication: lock() returns
/// coproc::errc::owner_died, async_lock completes with it, and owner_died()
/// is true until unlock(). The lock is then held: repair what it protects
/// and unlock as usual. Nobody hangs on a dead holder.
///
/// Does not move or copy (other processes point into its state).
/// Thread safety: all members may be called concurrently from any thread or
/// process, except that unlock() belongs to the holding thread.
class process_lock {
 public:
  /// Bytes (and alignment) the shared state takes in a shared_memory segment.
  static constexpr std::size_t shared_size = sizeof(detail::lock_state);
  static constexpr std::size_t shared_alignment = alignof(detail::lock_state);

  /// An unlocked lock in its own small memfd region.
  /// Throws std::system_error naming the failing call.
  process_lock() : state_(detail::own_region) {}

  /// A lock whose state is `shared_size` bytes at `offset` in `seg`
  /// (aligned to shared_alignment): created there (`shm_init::create`, once)
  /// or attached to (`shm_init::attach`). Throws std::out_of_range or
  /// std::invalid_argument for a bad offset.
  process_lock(shared_memory& seg, std::size_t offset, shm_init init = shm_init::create)
      : state_(seg, offset, init) {}

  process_lock(const process_lock&) = delete;
  process_lock& operator=(const process_lock&) = delete;

  /// Releases the lock if the calling thread still holds it, so that
  /// destroying a held handle never strands the other processes.
  ~process_lock() {
    if (detail::held_by_me(*state_)) {
      detail::lock_release(*state_, detail::this_robust_thread());
    }
  }

  /// Blocks until the lock is held. Returns an empty error_code, or
  /// coproc::errc::owner_died when the previous holder died holding it (the
  /// lock is held then too). Throws std::system_error with
  /// std::errc::resource_deadlock_would_occur if this thread holds it already.
  std::error_code lock() {
    auto r = detail::lock_acquire(*state_, nullptr);
    return r == detail::acquire_result::recovered ? make_error_code(errc::owner_died)
                                                  : std::error_code{};
  }

  /// Takes the lock if it is free; never blocks. See owner_died().
  bool try_lock() noexcept {
    return detail::lock_try_acquire(*state_, detail::this_robust_thread(), false) !=
           detail::acquire_result::busy;
  }

  /// Blocks at most `d`; true when the lock was taken. See owner_died().
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return try_lock_until(std::chrono::steady_clock::now() + d);
  }

  /// Blocks until `deadline` at most; true when the lock was taken.
  bool try_lock_until(std::chrono::steady_clock::time_point deadline) {
    return detail::lock_acquire(*state_, &deadline) != detail::acquire_result::busy;
  }

  /// Releases the lock and wakes one waiter if any sleeps. Throws
  /// std::system_error with std::errc::operation_not_permitted when the
  /// calling thread does not hold it.
  void unlock() {
    if (!detail::held_by_me(*state_)) {
      throw std::system_error(std::make_error_code(std::errc::operation_not_permitted),
                              "coproc::lock::unlock: not held by this thread");
    }
    detail::lock_release(*state_, detail::this_robust_thread());
  }

  /// True while the current hold was recovered from a holder that died.
  /// Meaningful only to the holder.
  bool owner_died() const noexcept { return state_->recovered != 0; }

  /// True when some thread (of any process) holds the lock. A snapshot.
  bool is_locked() const noexcept {
    return (state_->word.load(std::memory_order_relaxed) & detail::futex_tid_mask) != 0;
  }

  /// The TID of the holding thread, 0 when free. A snapshot, for diagnostics.
  std::uint32_t owner() const noexcept {
    return state_->word.load(std::memory_order_relaxed) & detail::futex_tid_mask;
  }

  /// Acquires the lock without blocking the calling (event-loop) thread.
  ///
  /// Completion signature: void(std::error_code): empty on success,
  /// coproc::errc::owner_died when recovered from a dead holder (held then
  /// too), asio::error::operation_aborted when cancelled (not held).
  /// The wait runs on the handler's associated executor (the coroutine's own
  /// with asio::use_awaitable; bind one with asio::bind_executor for plain
  /// callbacks). The handler is never called from inside this function.
  /// Cancellation: terminal, partial and total (the lock is then not taken).
  /// The holder is the thread that runs the completion: unlock there.
  template <class Token>
  auto async_lock(Token&& token) {
    return detail::async_futex_loop(detail::lock_machine{state_.get()}, std::forward<Token>(token));
  }

  /// The state's address (for primitives built on this lock).
  detail::lock_state& state() const noexcept { return *state_; }

 private:
  detail::state_holder<detail::lock_state> state_;
};

/// Python's multiprocessing.Lock; see process_lock.
using lock = process_lock;

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<process_lock> = true;

}  // namespace coproc
