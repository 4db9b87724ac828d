#include "coproc/runtime/child_process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <cerrno>

#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/detail/uring_ops.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace coproc {
namespace detail {

int child_state::reap(bool block) noexcept {
  std::lock_guard lock(mutex);
  if (reaped) {
    return 0;
  }
  siginfo_t info{};
  rusage usage{};
  int options = WEXITED | __WALL | (block ? 0 : WNOHANG);
  // The raw syscall: glibc's waitid has no rusage argument.
  long rc = retry_eintr(
      [&] { return ::syscall(SYS_waitid, P_PIDFD, pidfd.get(), &info, options, &usage); });
  if (rc < 0) {
    return errno;
  }
  if (info.si_pid == 0) {
    return EAGAIN;  // WNOHANG and still running
  }
  reaped = true;
  status = exit_status{};
  status.max_rss_kb = usage.ru_maxrss;
  switch (info.si_code) {
    case CLD_EXITED:
      status.exited = true;
      status.code = info.si_status;
      break;
    case CLD_DUMPED:
      status.core_dumped = true;
      status.signal = info.si_status;
      break;
    default:
      status.signal = info.si_status;
      break;
  }
  return 0;
}

io_uring_sqe wait_exit_impl::prepare() noexcept {
  io_uring_sqe sqe{};
  if (waitid) {
    // WNOWAIT: the ring only observes the exit; the reap (with rusage) is done
    // by the raw waitid below, on the loop thread.
    prep_waitid(&sqe, static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(state->pidfd.get()), &info,
                WEXITED | WNOWAIT | __WALL);
  } else {
    io_uring_prep_poll_add(&sqe, state->pidfd.get(), POLLIN);
  }
  return sqe;
}

int wait_exit_impl::attempt() noexcept {
  pollfd p{state->pidfd.get(), POLLIN, 0};
  int n = ::poll(&p, 1, 0);
  if (n < 0) {
    return -errno;
  }
  return n == 0 ? -EAGAIN : 0;
}

std::tuple<std::error_code, exit_status> wait_exit_impl::result(int res,
                                                                bool cancel_requested) noexcept {
  if (res < 0 && res != -ECHILD) {
    return {uring_error(res, cancel_requested), exit_status{}};
  }
  // Success, or ECHILD (already reaped by our own destructor/kill_and_reap, or
  // by someone else): reap without blocking, the exit has been observed.
  int err = state->reap(false);
  if (err == EAGAIN) {
    // Cannot follow a WEXITED completion; be safe rather than block the loop.
    return {std::make_error_code(std::errc::resource_unavailable_try_again), exit_status{}};
  }
  if (err != 0) {
    return {std::error_code(err, std::system_category()), exit_status{}};
  }
  std::lock_guard lock(state->mutex);
  return {std::error_code(), state->status};
}

}  // namespace detail

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    state_ = std::move(other.state_);
  }
  return *this;
}

child_process child_process::adopt(pid_t pid) {
  int fd = static_cast<int>(detail::check_syscall(::syscall(SYS_pidfd_open, pid, 0), "pidfd_open"));
  child_process child;
  child.state_ = std::make_shared<detail::child_state>();
  child.state_->pid = pid;
  child.state_->pidfd.reset(fd);
  return child;
}

void child_process::send_signal(int sig) {
  if (!state_) {
    return;
  }
  {
    std::lock_guard lock(state_->mutex);
    if (state_->reaped) {
      return;
    }
  }
  if (::syscall(SYS_pidfd_send_signal, state_->pidfd.get(), sig, nullptr, 0) < 0 &&
      errno != ESRCH) {
    detail::throw_errno("pidfd_send_signal");
  }
}

std::optional<exit_status> child_process::status() const {
  if (!state_) {
    return std::nullopt;
  }
  std::lock_guard lock(state_->mutex);
  if (!state_->reaped) {
    return std::nullopt;
  }
  return state_->status;
}

std::optional<exit_status> child_process::kill_and_reap() noexcept {
  if (!state_) {
    return std::nullopt;
  }
  bool reaped;
  {
    std::lock_guard lock(state_->mutex);
    reaped = state_->reaped;
  }
  if (!reaped) {
    ::syscall(SYS_pidfd_send_signal, state_->pidfd.get(), SIGKILL, nullptr, 0);
    state_->reap(true);
  }
  std::lock_guard lock(state_->mutex);
  if (!state_->reaped) {
    return std::nullopt;  // reaped by someone else: nothing left to report
  }
  return state_->status;
}

}  // namespace coproc
