// The epoll backend of uring_service: an op is attempted without blocking on
// a thread running the io_context; when it would block, it waits for
// readiness on Asio's reactor through the I/O object's registered duplicate
// of its fd, then is attempted again. Futex waits never come here (they go to
// the futex watcher, uring_service.cpp).

#include <asio/bind_cancellation_slot.hpp>
#include <asio/post.hpp>
#include <cerrno>

#include "coproc/runtime/uring_service.hpp"

namespace coproc {

void uring_service::reactor_start(detail::io_op* op) {
  int fd = op->plan().fd;
  {
    std::lock_guard lock(mutex_);
    op->pending = 1;
    op->fd = fd;  // before any cancel_fd can look for it
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
  detail::reactor_plan plan = op->plan();
  if (!plan.watch) {
    finish_event(op, true, -EBADF);  // the object closed its fd
    return;
  }
  auto wait = plan.what == detail::reactor_plan::kind::writable
                  ? asio::posix::stream_descriptor::wait_write
                  : asio::posix::stream_descriptor::wait_read;
  std::lock_guard lock(mutex_);
  if (shut_down_) {
    return;
  }
  if (op->cancel_requested) {
    // Cancelled during the attempt: its result was "would block".
    asio::post(*ctx_, [this, op] { finish_event(op, true, -ECANCELED); });
    return;
  }
  op->waiting = true;
  // The watch rides along with the handler: the registration lives while the
  // wait is pending, even if the object closes meanwhile.
  plan.watch->async_wait(
      wait, asio::bind_cancellation_slot(
                op->reactor_cancel.slot(), [this, op, w = plan.watch](const std::error_code& ec) {
                  {
                    std::lock_guard lock(mutex_);
                    if (shut_down_) {
                      return;
                    }
                    op->waiting = false;
                  }
                  if (ec) {
                    finish_event(op, true,
                                 ec == asio::error::operation_aborted ? -ECANCELED : -ec.value());
                    return;
                  }
                  reactor_step(op);
                }));
}

}  // namespace coproc
