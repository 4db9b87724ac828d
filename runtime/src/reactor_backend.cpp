// The epoll backend of uring_service: an op is attempted without blocking on
// a thread running the io_context; when it would block, it joins the
// service's interest set (its own epoll instance) and Asio's reactor waits on
// that set's fd; when its fd is ready it is attempted again. Futex waits come
// here only with a doorbell (coproc::futex_doorbell: its eventfd is watched);
// others go to the futex watcher (uring_service.cpp).

#include <fcntl.h>

#include <asio/post.hpp>
#include <cerrno>

#include "coproc/runtime/detail/interest_set.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc {

void uring_service::reactor_open() {
  interest_.emplace();
  // Asio owns (and sets O_NONBLOCK on) a duplicate: the flag is harmless on
  // an epoll fd that only this service uses.
  int dup =
      detail::check_syscall(::fcntl(interest_->fd(), F_DUPFD_CLOEXEC, 0), "fcntl(F_DUPFD_CLOEXEC)");
  try {
    interest_wait_ = std::make_unique<asio::posix::stream_descriptor>(*ctx_, dup);
  } catch (...) {
    ::close(dup);
    throw;
  }
}

void uring_service::reactor_start(detail::io_op* op) {
  detail::reactor_plan plan = op->plan();
  {
    std::lock_guard lock(mutex_);
    op->pending = 1;
    op->fd = plan.fd;  // before any cancel_fd can look for it
    op->wants_write = plan.what == detail::reactor_plan::kind::writable;
    op->edge_triggered = plan.what == detail::reactor_plan::kind::doorbell;
    in_flight_.push(op);
  }
  // Never inline: the first attempt runs after the initiating function returned.
  asio::post(*ctx_, [this, op] { reactor_step(op); });
}

void uring_service::reactor_step(detail::io_op* op) {
  bool cancelled = false;
  {
    std::lock_guard lock(mutex_);
    if (shut_down_) {
      return;
    }
    // A cancelled op is never attempted again: cancel_fd precedes a close,
    // and the fd number may already name another file.
    cancelled = op->cancel_requested;
  }
  if (cancelled) {
    finish_event(op, true, -ECANCELED);
    return;
  }
  int res = op->attempt();
  if (res != -EAGAIN) {
    finish_event(op, true, res);
    return;
  }
  std::unique_lock lock(mutex_);
  if (shut_down_) {
    return;
  }
  int err = op->cancel_requested ? ECANCELED : interest_->add(op);
  if (err == 0) {
    arm_interest_locked();
    return;
  }
  lock.unlock();
  finish_event(op, true, -err);
}

void uring_service::arm_interest_locked() {
  if (interest_armed_ || interest_->empty() || shut_down_) {
    return;
  }
  // Armed only while an op waits: a pending wait is outstanding work and
  // would keep io_context::run() from returning.
  interest_armed_ = true;
  interest_wait_->async_wait(asio::posix::stream_descriptor::wait_read,
                             [this](const std::error_code& ec) {
                               std::vector<detail::io_op*> ready;
                               {
                                 std::lock_guard lock(mutex_);
                                 interest_armed_ = false;
                                 if (shut_down_) {
                                   return;
                                 }
                                 if (ec == asio::error::operation_aborted) {
                                   // Released because nothing waited; ops that
                                   // joined since need the wait again.
                                   arm_interest_locked();
                                   return;
                                 }
                                 ready = interest_->take_ready();
                               }
                               for (detail::io_op* op : ready) {
                                 reactor_step(op);
                               }
                               std::lock_guard lock(mutex_);
                               interest_->settle();
                               arm_interest_locked();
                             });
}

bool uring_service::reactor_cancel_locked(detail::io_op* op) {
  if (!op->waiting) {
    return false;  // its step is posted or running: it sees cancel_requested
  }
  interest_->remove(op);
  if (interest_->empty() && interest_armed_) {
    // The armed wait is outstanding work: left armed with nothing in the
    // set, it would keep io_context::run() from returning.
    interest_wait_->cancel();
  }
  return true;
}

}  // namespace coproc
