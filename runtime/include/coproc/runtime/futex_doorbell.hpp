#pragma once
/// coproc::futex_doorbell: an eventfd that wakers ring beside a futex word,
/// so an event loop on the epoll backend waits for the word without a thread.

#include <atomic>
#include <cstdint>

#include "coproc/runtime/detail/sleep_flag.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

/// On the epoll backend (and on kernels without IORING_OP_FUTEX_WAIT) a loop
/// cannot ask the kernel to wait on a futex word, so async_futex_wait hands
/// the word to a watcher thread: one more wake-up per wait, which shows on a
/// stream of waits (a queue drained by a loop). A primitive that owns a
/// futex_doorbell lets the loop wait on its eventfd instead:
///
/// - Waiters: a loop's wait announces itself in a `listeners` count the
///   primitive keeps beside the word in shared memory, re-checks the word,
///   and waits for the eventfd (edge-triggered: the eventfd is never read,
///   so every process watching it sees every ring).
/// - Wakers: after changing the word (and its FUTEX_WAKE, for blocked
///   threads), ring(listeners) writes to the eventfd when a loop listens;
///   otherwise it costs one load.
///
/// The word change and the count follow detail::sleep_flag's handshake (a
/// count word: join, fence, re-check; change, fence, look): either the
/// waiter sees the new word or the waker sees the listener.
///
/// The eventfd is shared by fork: processes forked after construction ring
/// and watch the same one (a primitive in memory shared through fork() has
/// the same fd number in every process). A listener killed while counted
/// leaves the count too high: every later ring then costs one write, never a
/// lost or extra completion.
///
/// Does not move or copy (waiters refer to it). Thread safety: ring() from
/// any thread of any process sharing it.
class futex_doorbell {
 public:
  /// Throws std::system_error naming eventfd.
  futex_doorbell();
  futex_doorbell(const futex_doorbell&) = delete;
  futex_doorbell& operator=(const futex_doorbell&) = delete;

  int native_handle() const noexcept { return fd_.get(); }

  /// After the watched word changed: wakes the loops that listen.
  void ring(const std::atomic<std::uint32_t>& listeners) const noexcept {
    if (detail::sleep_flag::joined(listeners)) {
      write_once();
    }
  }

 private:
  void write_once() const noexcept;

  unique_fd fd_;
  std::uint64_t dev_ = 0;  // identity of the eventfd's (anonymous) inode
  std::uint64_t ino_ = 0;
};

}  // namespace coproc
