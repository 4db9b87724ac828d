// The io_uring backend of uring_service: the ring, its eventfd bridged into
// the io_context, batched submission and draining, cancellation by
// IORING_OP_ASYNC_CANCEL, and shutdown that waits for the kernel.

#include <sys/eventfd.h>

#include <asio/post.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/detail/uring_ops.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc {
namespace {

constexpr std::uint64_t cancel_tag = 1;      // bit 0 of user_data: the cancel's CQE
constexpr std::uint64_t untracked_data = 2;  // CQEs that belong to no op (never an op address)
constexpr unsigned drain_batch = 64;

[[noreturn]] void throw_unavailable(const char* call, int err) {
  throw std::system_error(
      make_error_code(errc::uring_unavailable),
      std::string(call) + " failed (" + std::strerror(err) +
          "): io_uring is refused here. Check /proc/sys/kernel/io_uring_disabled (must be 0, "
          "or 1 with this process in kernel.io_uring_group) and the seccomp profile "
          "(container runtimes often block io_uring_setup; allow io_uring_setup, "
          "io_uring_enter and io_uring_register)");
}

}  // namespace

bool uring_service::ring_open(const uring_options& options) {
  io_uring_params params{};
  params.flags = IORING_SETUP_CLAMP;
  int rc = io_uring_queue_init_params(options.entries, &ring_, &params);
  if (rc < 0) {
    throw_unavailable("io_uring_setup", -rc);
  }
  ring_ready_ = true;
  try {
    io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
    if (probe == nullptr) {
      throw std::system_error(make_error_code(errc::uring_unavailable),
                              "io_uring_register(IORING_REGISTER_PROBE) failed: kernel too old");
    }
    auto supported = [probe](int op) { return io_uring_opcode_supported(probe, op) != 0; };
    bool base_ok = supported(IORING_OP_READ) && supported(IORING_OP_WRITE) &&
                   supported(IORING_OP_READV) && supported(IORING_OP_WRITEV) &&
                   supported(IORING_OP_ASYNC_CANCEL) && supported(IORING_OP_POLL_ADD) &&
                   supported(IORING_OP_SEND);
    has_waitid_ = options.use_waitid && supported(detail::op_waitid);
    has_futex_wait_ = options.use_futex_wait && supported(detail::op_futex_wait);
    io_uring_free_probe(probe);
    if (!base_ok) {
      throw std::system_error(make_error_code(errc::uring_unavailable),
                              "io_uring lacks READ/WRITE/SEND/ASYNC_CANCEL/POLL_ADD: kernel 5.6 or "
                              "newer is required");
    }
    unique_fd efd(detail::check_syscall(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd"));
    rc = io_uring_register_eventfd(&ring_, efd.get());
    if (rc < 0) {
      throw_unavailable("io_uring_register_eventfd", -rc);
    }
    event_ = std::make_unique<asio::posix::stream_descriptor>(*ctx_, efd.release());
  } catch (...) {
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
    has_waitid_ = has_futex_wait_ = false;
    throw;
  }
  return true;
}

io_uring_sqe* uring_service::get_sqe_locked() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    // The SQ is full: submit what is queued (the kernel copies SQEs at submit
    // time, so the slots are free again) and retry.
    int rc = io_uring_submit(&ring_);
    if (rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR) {
      detail::throw_errno("io_uring_submit", -rc);
    }
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void uring_service::ring_start(detail::io_op* op) {
  io_uring_sqe sqe_data = op->prepare();
  std::lock_guard lock(mutex_);
  io_uring_sqe* sqe = get_sqe_locked();
  *sqe = sqe_data;
  io_uring_sqe_set_data(sqe, op);
  op->pending = 1;
  in_flight_.push(op);
  arm_wait_locked();
  request_flush_locked();
}

void uring_service::ring_cancel(detail::io_op* op) noexcept {
  std::lock_guard lock(mutex_);
  if (op->pending == 0 || op->cancel_requested || shut_down_) {
    return;
  }
  try {
    io_uring_sqe* sqe = get_sqe_locked();
    io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(op), 0);
    io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uintptr_t>(op) | cancel_tag);
  } catch (...) {
    return;  // the ring is broken: the op completes on its own or at shutdown
  }
  op->cancel_requested = true;
  ++op->pending;
  request_flush_locked();
}

void uring_service::ring_cancel_fd(int fd) noexcept {
  std::lock_guard lock(mutex_);
  if (in_flight_.empty() || shut_down_) {
    return;  // nothing can be in flight on fd
  }
  try {
    io_uring_sqe* sqe = get_sqe_locked();
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, untracked_data);
    ++untracked_;
    arm_wait_locked();
    io_uring_submit(&ring_);
  } catch (...) {
  }
}

void uring_service::request_flush_locked() {
  // Inside on_eventfd the turn ends with a submit anyway: no post needed (a
  // posted handler would also make the next reactor poll a non-blocking one).
  if (!flush_posted_ && draining_ == 0) {
    flush_posted_ = true;
    asio::post(*ctx_, [this] { flush(); });
  }
}

void uring_service::arm_wait_locked() {
  if (wait_armed_ || shut_down_) {
    return;
  }
  wait_armed_ = true;
  // A read, not async_wait: Asio's epoll reactor re-registers the fd
  // (EPOLL_CTL_MOD) on every async_wait, while a read queued after a short
  // read (8 bytes into 16: "exhausted") costs no syscall at all. The read also
  // resets the counter, which a level-triggered reactor needs.
  event_->async_read_some(asio::buffer(event_buf_),
                          [this](const asio::error_code& ec, std::size_t) {
                            if (!ec) {
                              on_eventfd();
                              return;
                            }
                            // Cancelled because the ring went idle (see
                            // release_wait_if_idle_locked), or by shutdown. Operations started
                            // since then still need the wait.
                            std::lock_guard lock(mutex_);
                            wait_armed_ = false;
                            rearm_if_busy_locked();
                          });
}

void uring_service::flush() {
  {
    std::lock_guard lock(mutex_);
    flush_posted_ = false;
  }
  submit_and_drain();
}

void uring_service::submit_and_drain() {
  // A few rounds at most: each round is one batch of handlers; what they queue
  // after that waits for the posted flush, so other handlers get their turn.
  for (int round = 0; round < 4; ++round) {
    {
      std::lock_guard lock(mutex_);
      if (shut_down_ || io_uring_sq_ready(&ring_) == 0) {
        return;
      }
      // Operations that complete inline during submit (a write into a pipe
      // with room, a read of data already there) are harvested by the drain
      // below, so their CQEs need not raise the eventfd: that would cost the
      // loop one more reactor turn for nothing.
      std::atomic_ref<unsigned> cq_flags(*ring_.cq.kflags);
      cq_flags.store(cq_flags.load(std::memory_order_relaxed) | IORING_CQ_EVENTFD_DISABLED,
                     std::memory_order_release);
      int rc = io_uring_submit(&ring_);
      cq_flags.store(cq_flags.load(std::memory_order_relaxed) & ~IORING_CQ_EVENTFD_DISABLED,
                     std::memory_order_seq_cst);
      if (rc < 0 && (rc == -EAGAIN || rc == -EBUSY || rc == -EINTR)) {
        request_flush_locked();  // transient: try again next turn
      }
    }
    // Drained after re-enabling the eventfd: a CQE posted in between is
    // harvested here, any later one raises the eventfd.
    drain();
    std::lock_guard lock(mutex_);
    release_wait_if_idle_locked();
  }
}

void uring_service::rearm_if_busy_locked() {
  if (shut_down_ || (in_flight_.empty() && untracked_ == 0)) {
    return;
  }
  arm_wait_locked();
  // A CQE posted between the last drain and this re-arm may have raised the
  // eventfd while no wait was queued (edge-triggered epoll forgets it): raise
  // it again so the new wait sees it.
  if (io_uring_cq_ready(&ring_) > 0) {
    std::uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(event_->native_handle(), &one, sizeof one);
  }
}

void uring_service::release_wait_if_idle_locked() {
  // The armed eventfd wait is outstanding work: left armed with nothing in
  // flight, it would keep io_context::run() from returning.
  if (wait_armed_ && in_flight_.empty() && untracked_ == 0) {
    asio::error_code ignored;
    event_->cancel(ignored);
  }
}

void uring_service::on_eventfd() {
  {
    std::lock_guard lock(mutex_);
    ++draining_;
  }
  drain();
  {
    std::lock_guard lock(mutex_);
    wait_armed_ = false;
    rearm_if_busy_locked();
  }
  // What the handlers just queued leaves now, in this same turn, rather than
  // after another reactor poll.
  submit_and_drain();
  std::lock_guard lock(mutex_);
  --draining_;
  if (io_uring_sq_ready(&ring_) > 0) {
    request_flush_locked();  // left over after the last round
  }
}

void uring_service::drain() {
  io_uring_cqe* cqes[drain_batch];
  for (;;) {
    detail::io_op* done[drain_batch];
    unsigned n_done = 0;
    unsigned n;
    {
      std::lock_guard lock(mutex_);
      if (shut_down_) {
        return;
      }
      n = io_uring_peek_batch_cqe(&ring_, cqes, drain_batch);
      for (unsigned i = 0; i < n; ++i) {
        std::uint64_t data = cqes[i]->user_data;
        int res = cqes[i]->res;
        if (data == untracked_data) {
          --untracked_;
          continue;
        }
        auto* op = reinterpret_cast<detail::io_op*>(data & ~cancel_tag);
        if ((data & cancel_tag) == 0) {
          op->res = res;
        }
        if (--op->pending == 0) {
          in_flight_.erase(op);
          done[n_done] = op;
          ++n_done;
        }
      }
      io_uring_cq_advance(&ring_, n);
    }
    // Upcalls run without the lock: handlers start new operations.
    for (unsigned i = 0; i < n_done; ++i) {
      done[i]->complete(true);
    }
    if (n < drain_batch) {
      return;
    }
  }
}

void uring_service::ring_shutdown(std::unique_lock<std::mutex>& lock) noexcept {
  (void)lock;  // held by the caller
  // The kernel may still write into buffers owned by pending ops: cancel them
  // all and wait for every CQE before the ops (and their buffers) are freed.
  // Ops on the futex watcher have no CQE to wait for.
  std::size_t expected = untracked_;
  for (detail::io_op* op = in_flight_.front(); op != nullptr; op = op->next) {
    if (!op->on_watcher) {
      expected += op->pending;
    }
  }
  try {
    if (expected > 0) {
      io_uring_sqe* sqe = get_sqe_locked();
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
      io_uring_sqe_set_data64(sqe, untracked_data);
      ++expected;
    }
  } catch (...) {
  }
  io_uring_submit(&ring_);
  while (expected > 0) {
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc == -EINTR) {
      continue;
    }
    if (rc < 0) {
      break;  // cannot happen with a live ring; leak rather than free under the kernel
    }
    io_uring_cqe_seen(&ring_, cqe);
    --expected;
  }
  untracked_ = 0;
}

}  // namespace coproc
