#pragma once
// A child_process's shared state and the exit wait as an io operation: its
// SQE for the ring (IORING_OP_WAITID, or a poll on the pidfd), its plan for
// the epoll backend and its result. Defined in runtime/src/child_process.cpp.

#include <liburing.h>
#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <mutex>
#include <system_error>
#include <tuple>

#include "coproc/runtime/detail/io_op.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {
namespace detail {

/// State shared by a child_process and its pending exit waits, so the object
/// can move (or die) while a wait is in flight.
struct child_state {
  pid_t pid = -1;
  unique_fd pidfd;
  std::mutex mutex;  // guards reaped/status: reaping may race with the destructor
  bool reaped = false;
  exit_status status;

  /// waitid(P_PIDFD, WEXITED | __WALL | (block ? 0 : WNOHANG)) with rusage.
  /// Returns 0 when reaped (status set), EAGAIN when still running, or errno.
  int reap(bool block) noexcept;
};

struct wait_exit_impl {
  wait_exit_impl(std::shared_ptr<child_state> s, bool use_waitid) noexcept
      : state(std::move(s)), waitid(use_waitid) {}
  io_uring_sqe prepare() noexcept;
  reactor_plan plan() const { return reactor_plan::readable(state->pidfd.get()); }
  /// A pidfd is readable once the child has exited.
  int attempt() noexcept;
  std::tuple<std::error_code, exit_status> result(int res, bool cancel_requested) noexcept;

  std::shared_ptr<child_state> state;
  bool waitid;
  siginfo_t info{};
};

}  // namespace detail

}  // namespace coproc
