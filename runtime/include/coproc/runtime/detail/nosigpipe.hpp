#pragma once
// Writes to a pipe that never raise SIGPIPE in the host, whatever its SIGPIPE
// disposition, without installing a handler.
//
// A pipe has no MSG_NOSIGNAL. A write to a pipe without reader queues SIGPIPE
// for the writing thread (a thread-directed signal), so blocking it in this
// thread for the call keeps it from being delivered; when the write failed
// with EPIPE and SIGPIPE was not pending before, the signal the write queued
// is taken with sigtimedwait (zero timeout) before the mask is restored. A
// SIGPIPE that was already pending (the host's own) is left alone. A thread
// that already blocks SIGPIPE pays one sigprocmask and keeps its own state.
// Cost: two or three system calls per write; use it for rare writes (zygote
// commands) or where a socket's MSG_NOSIGNAL is not available.

#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <ctime>

#include "coproc/runtime/detail/fd_io.hpp"

namespace coproc::detail {

/// pwritev2(fd, iov, count, -1, flags) that never raises SIGPIPE (EINTR is
/// retried); returns what pwritev2 returned, errno set. flags: RWF_NOWAIT for
/// a non-blocking write on a blocking pipe (the epoll backend's attempt).
inline ssize_t pwritev_nosigpipe(int fd, const iovec* iov, int count, int flags) noexcept {
  sigset_t pipe_set;
  sigset_t old;
  ::sigemptyset(&pipe_set);
  ::sigaddset(&pipe_set, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  bool blocked_before = ::sigismember(&old, SIGPIPE) == 1;
  bool pending_before = false;
  if (!blocked_before) {
    sigset_t pending;
    ::sigpending(&pending);
    pending_before = ::sigismember(&pending, SIGPIPE) == 1;
  }
  ssize_t r = retry_eintr([&] { return ::pwritev2(fd, iov, count, -1, flags); });
  int err = errno;
  if (!blocked_before) {
    if (r < 0 && err == EPIPE && !pending_before) {
      timespec zero{};
      retry_eintr([&] { return ::sigtimedwait(&pipe_set, nullptr, &zero); });
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  errno = err;
  return r;
}

/// write(2) that never raises SIGPIPE; returns what write returned, errno set.
inline ssize_t write_nosigpipe(int fd, const void* data, std::size_t size) noexcept {
  iovec iov{const_cast<void*>(data), size};
  return pwritev_nosigpipe(fd, &iov, 1, 0);
}

}  // namespace coproc::detail
