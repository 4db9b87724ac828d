#include "coproc/runtime/uring_service.hpp"

#include <sys/eventfd.h>

#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <typeinfo>

#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {
namespace {

constexpr std::uint64_t cancel_tag = 1;      // bit 0 of user_data: the cancel's CQE
constexpr std::uint64_t untracked_data = 2;  // CQEs that belong to no op (never an op address)
constexpr unsigned drain_batch = 64;

[[noreturn]] void throw_unavailable(int err) {
  throw std::system_error(
      make_error_code(errc::uring_unavailable),
      std::string("io_uring_setup failed (") + std::strerror(err) +
          "): io_uring is refused here. Check /proc/sys/kernel/io_uring_disabled (must be 0, "
          "or 1 with this process in kernel.io_uring_group) and the seccomp profile "
          "(container runtimes often block io_uring_setup; allow io_uring_setup, "
          "io_uring_enter and io_uring_register)");
}

}  // namespace

uring_service::uring_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {
  throw std::invalid_argument(
      "coproc::uring_service needs an asio::io_context (call uring_service::install on it, "
      "or pass an io_context executor)");
}

uring_service& uring_service::of_any(const asio::any_io_executor& ex,
                                     asio::execution_context& ctx) {
  // any_executor::target<T>() of Asio 1.22 does not check the type: compare
  // target_type() first.
  using io_executor = asio::io_context::executor_type;
  if (ex.target_type() == typeid(io_executor)) {
    return asio::use_service<uring_service>(ex.target<io_executor>()->context());
  }
  if (ex.target_type() == typeid(asio::strand<io_executor>)) {
    return asio::use_service<uring_service>(
        ex.target<asio::strand<io_executor>>()->get_inner_executor().context());
  }
  return asio::use_service<uring_service>(ctx);
}

uring_service::uring_service(asio::io_context& ctx, uring_options options)
    : asio::execution_context::service(ctx), ctx_(&ctx) {
  io_uring_params params{};
  params.flags = IORING_SETUP_CLAMP;
  int rc = io_uring_queue_init_params(options.entries, &ring_, &params);
  if (rc < 0) {
    if (rc == -ENOSYS || rc == -EPERM || rc == -EACCES) {
      throw_unavailable(-rc);
    }
    detail::throw_errno("io_uring_queue_init_params", -rc);
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
                   supported(IORING_OP_ASYNC_CANCEL) && supported(IORING_OP_POLL_ADD);
    has_waitid_ = options.use_waitid && supported(detail::op_waitid);
    has_futex_wait_ = options.use_futex_wait && supported(detail::op_futex_wait);
    io_uring_free_probe(probe);
    if (!base_ok) {
      throw std::system_error(make_error_code(errc::uring_unavailable),
                              "io_uring lacks READ/WRITE/ASYNC_CANCEL/POLL_ADD: kernel 5.6 or "
                              "newer is required");
    }
    unique_fd efd(detail::check_syscall(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd"));
    rc = io_uring_register_eventfd(&ring_, efd.get());
    if (rc < 0) {
      detail::throw_errno("io_uring_register_eventfd", -rc);
    }
    event_.emplace(ctx, efd.release());
  } catch (...) {
    io_uring_queue_exit(&ring_);
    throw;
  }
}

uring_service::~uring_service() {
  shutdown();
  event_.reset();
  if (ring_ready_) {
    io_uring_queue_exit(&ring_);
  }
}

uring_service& uring_service::install(asio::io_context& ctx, uring_options options) {
  auto service = std::make_unique<uring_service>(ctx, options);
  asio::add_service(ctx, service.get());  // throws service_already_exists
  return *service.release();
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

void uring_service::link_locked(detail::uring_op* op) noexcept {
  op->prev = nullptr;
  op->next = in_flight_;
  if (in_flight_ != nullptr) {
    in_flight_->prev = op;
  }
  in_flight_ = op;
}

void uring_service::unlink_locked(detail::uring_op* op) noexcept {
  if (op->prev != nullptr) {
    op->prev->next = op->next;
  } else {
    in_flight_ = op->next;
  }
  if (op->next != nullptr) {
    op->next->prev = op->prev;
  }
  op->prev = op->next = nullptr;
}

void uring_service::start(detail::uring_op* op, const io_uring_sqe& sqe_data) {
  std::lock_guard lock(mutex_);
  io_uring_sqe* sqe = get_sqe_locked();
  *sqe = sqe_data;
  io_uring_sqe_set_data(sqe, op);
  op->pending = 1;
  link_locked(op);
  arm_wait_locked();
  request_flush_locked();
}

void uring_service::cancel(detail::uring_op* op) noexcept {
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

void uring_service::cancel_fd(int fd) noexcept {
  std::lock_guard lock(mutex_);
  if (in_flight_ == nullptr || shut_down_) {
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
  if (!flush_posted_) {
    flush_posted_ = true;
    asio::post(*ctx_, [this] { flush(); });
  }
}

void uring_service::arm_wait_locked() {
  if (wait_armed_ || shut_down_) {
    return;
  }
  wait_armed_ = true;
  event_->async_wait(asio::posix::stream_descriptor::wait_read, [this](const asio::error_code& ec) {
    if (!ec) {
      on_eventfd();
    } else {
      std::lock_guard lock(mutex_);
      wait_armed_ = false;
    }
  });
}

void uring_service::flush() {
  {
    std::lock_guard lock(mutex_);
    flush_posted_ = false;
    if (shut_down_) {
      return;
    }
    if (io_uring_sq_ready(&ring_) > 0) {
      int rc = io_uring_submit(&ring_);
      if (rc < 0 && (rc == -EAGAIN || rc == -EBUSY || rc == -EINTR)) {
        request_flush_locked();  // transient: try again next turn
      }
    }
  }
  // Operations that complete inline during submit (a write into a pipe with
  // room, a read of data already there) are harvested now rather than one
  // epoll round later.
  drain();
}

void uring_service::on_eventfd() {
  // The eventfd counter is reset so a level-triggered reactor does not spin;
  // the CQ (not the counter) is the truth.
  std::uint64_t value = 0;
  [[maybe_unused]] auto n = ::read(event_->native_handle(), &value, sizeof value);
  drain();
  std::lock_guard lock(mutex_);
  wait_armed_ = false;
  if (in_flight_ != nullptr || untracked_ > 0) {
    arm_wait_locked();
    // A CQE posted between the drain and the re-arm may have raised the
    // eventfd while no wait was queued (edge-triggered epoll forgets it):
    // raise it again so the new wait sees it.
    if (io_uring_cq_ready(&ring_) > 0) {
      std::uint64_t one = 1;
      [[maybe_unused]] auto w = ::write(event_->native_handle(), &one, sizeof one);
    }
  }
}

void uring_service::drain() {
  io_uring_cqe* cqes[drain_batch];
  for (;;) {
    detail::uring_op* done[drain_batch];
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
        auto* op = reinterpret_cast<detail::uring_op*>(data & ~cancel_tag);
        if ((data & cancel_tag) == 0) {
          op->res = res;
        }
        if (--op->pending == 0) {
          unlink_locked(op);
          done[n_done] = op;
          ++n_done;
        }
      }
      io_uring_cq_advance(&ring_, n);
    }
    // Upcalls run without the lock: handlers start new operations.
    for (unsigned i = 0; i < n_done; ++i) {
      done[i]->complete(done[i], true);
    }
    if (n < drain_batch) {
      return;
    }
  }
}

void uring_service::shutdown() {
  std::unique_lock lock(mutex_);
  if (shut_down_ || !ring_ready_) {
    return;
  }
  shut_down_ = true;
  // The kernel may still write into buffers owned by pending ops: cancel them
  // all and wait for every CQE before the ops (and their buffers) are freed.
  std::size_t expected = untracked_;
  for (detail::uring_op* op = in_flight_; op != nullptr; op = op->next) {
    expected += op->pending;
  }
  if (expected > 0) {
    io_uring_sqe* sqe = get_sqe_locked();
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, untracked_data);
    ++expected;
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
  detail::uring_op* op = std::exchange(in_flight_, nullptr);
  untracked_ = 0;
  lock.unlock();
  while (op != nullptr) {
    detail::uring_op* next = op->next;
    op->complete(op, false);
    op = next;
  }
  asio::error_code ignored;
  if (event_) {
    event_->cancel(ignored);
  }
}

}  // namespace coproc
