#pragma once
// Writes that never raise SIGPIPE in the calling process, whatever its
// SIGPIPE disposition, without installing a handler: SIGPIPE is blocked in
// the calling thread around the call, and the SIGPIPE the kernel queued for
// that thread (no reader left: EPIPE) is taken before the mask is restored.
// A thread that already blocks SIGPIPE keeps its own state untouched.

#include <signal.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cerrno>
#include <ctime>

namespace coproc::detail {

/// pwritev2(fd, iov, count, -1, flags) without SIGPIPE; returns as pwritev2.
inline ssize_t writev_no_sigpipe(int fd, const iovec* iov, int count, int flags) noexcept {
  sigset_t pipe_set;
  sigset_t old;
  ::sigemptyset(&pipe_set);
  ::sigaddset(&pipe_set, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t r = ::pwritev2(fd, iov, count, -1, flags);
  int err = errno;
  if (::sigismember(&old, SIGPIPE) == 0) {
    if (r < 0 && err == EPIPE) {
      timespec zero{};
      while (::sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  errno = err;
  return r;
}

}  // namespace coproc::detail
