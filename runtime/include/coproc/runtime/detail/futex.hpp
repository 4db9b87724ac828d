#pragma once
// Blocking futex calls on a 32-bit word in shared memory (no FUTEX_PRIVATE_FLAG:
// the word is shared between processes). Used by code that may block: workers,
// plain threads. The event loop waits on futex words through the io_uring ring.

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace coproc::detail {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

/// Sleeps while `word == expected`, at most `timeout` (null: no limit).
/// Returns 0, or the errno (EAGAIN: value changed, ETIMEDOUT, EINTR).
inline int futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      const timespec* timeout = nullptr) noexcept {
  long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected,
                      timeout, nullptr, 0);
  return rc == 0 ? 0 : errno;
}

/// Wakes up to `count` waiters on `word`; returns how many were woken.
inline int futex_wake(std::atomic<std::uint32_t>& word, int count = 1) noexcept {
  return static_cast<int>(::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE,
                                    count, nullptr, nullptr, 0));
}

}  // namespace coproc::detail
