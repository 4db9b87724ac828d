#pragma once
/// coproc::uring_service: an io_uring ring owned by an asio::execution_context
/// service and bridged into any asio::io_context through a registered eventfd.

#include <liburing.h>

#include <asio/any_io_executor.hpp>
#include <asio/execution_context.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/query.hpp>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include "coproc/runtime/detail/uring_ops.hpp"

namespace coproc {

/// Options of a uring_service; set with designated initialisers.
struct uring_options {
  /// Submission queue entries (the completion queue gets twice as many).
  unsigned entries = 256;
  /// Use IORING_OP_WAITID when the kernel has it (false forces the POLL_ADD on
  /// pidfd fallback: for tests and for comparing the two paths).
  bool use_waitid = true;
  /// Use IORING_OP_FUTEX_WAIT when the kernel has it (false forces the polling
  /// fallback of async_futex_wait).
  bool use_futex_wait = true;
};

/// The io_uring ring of one asio::io_context.
///
/// The ring's completions raise a registered eventfd that the io_context
/// waits on (epoll or any other reactor: no Asio configuration macro is needed
/// in the host). Completions are drained in batches on the io_context's
/// thread; submissions are queued and flushed with one io_uring_submit per
/// loop turn.
///
/// Obtain it with `uring_service::of(executor)` or
/// `asio::use_service<uring_service>(io_context)`; to choose options, call
/// `uring_service::install(ctx, {...})` before the first use.
///
/// Throws (construction): std::system_error with coproc::errc::uring_unavailable
/// when the kernel refuses io_uring (io_uring_disabled sysctl, seccomp, old
/// kernel), std::system_error naming the call for other setup failures,
/// std::invalid_argument when the execution_context is not an asio::io_context.
///
/// Thread safety: operations may be started from any thread (submission is
/// under an internal mutex); completions run on a thread running the
/// io_context, through each handler's associated executor.
class uring_service final : public asio::execution_context::service {
 public:
  using key_type = uring_service;
  static inline asio::execution_context::id id;

  /// Creates the ring for `ctx`.
  explicit uring_service(asio::io_context& ctx, uring_options options = {});
  /// Reached only through asio::use_service on a context that is not an
  /// io_context and has no uring_service yet: throws std::invalid_argument.
  explicit uring_service(asio::execution_context& ctx);
  ~uring_service() override;
  uring_service(const uring_service&) = delete;
  uring_service& operator=(const uring_service&) = delete;

  /// Creates the service of `ctx` with `options`; throws
  /// asio::service_already_exists when it was already created.
  static uring_service& install(asio::io_context& ctx, uring_options options);

  /// The service of the io_context behind `ex` (created on first use): an
  /// io_context executor, a strand of one, or any executor of a context whose
  /// service was already created. Throws std::invalid_argument otherwise.
  template <class Executor>
  static uring_service& of(const Executor& ex) {
    auto& ctx = asio::query(ex, asio::execution::context);
    if constexpr (std::is_base_of_v<asio::io_context, std::decay_t<decltype(ctx)>>) {
      return asio::use_service<uring_service>(static_cast<asio::io_context&>(ctx));
    } else {
      return of_any(ex, ctx);
    }
  }

  asio::io_context& context() const noexcept { return *ctx_; }
  asio::io_context::executor_type get_executor() const noexcept { return ctx_->get_executor(); }

  /// Whether IORING_OP_WAITID / IORING_OP_FUTEX_WAIT are used (probed once at
  /// construction, and allowed by the options).
  bool has_waitid() const noexcept { return has_waitid_; }
  bool has_futex_wait() const noexcept { return has_futex_wait_; }

  /// Machinery for the async operations (coproc::detail): queues `sqe` for
  /// `op` (user_data is set here); submitted at the next flush.
  void start(detail::uring_op* op, const io_uring_sqe& sqe);
  /// Queues an IORING_OP_ASYNC_CANCEL for `op` if it is still in flight; the op
  /// completes once both its own and the cancel's CQE arrived.
  void cancel(detail::uring_op* op) noexcept;
  /// Cancels every operation on `fd` and submits at once (used by I/O objects
  /// about to close `fd`: the cancel must reach the kernel while fd is open).
  void cancel_fd(int fd) noexcept;

 private:
  static uring_service& of_any(const asio::any_io_executor& ex, asio::execution_context& ctx);
  void shutdown() override;
  io_uring_sqe* get_sqe_locked();
  void request_flush_locked();
  void arm_wait_locked();
  void flush();
  void submit_and_drain();
  void rearm_if_busy_locked();
  void release_wait_if_idle_locked();
  void on_eventfd();
  void drain();
  void link_locked(detail::uring_op* op) noexcept;
  void unlink_locked(detail::uring_op* op) noexcept;

  asio::io_context* ctx_ = nullptr;
  io_uring ring_{};
  bool ring_ready_ = false;
  std::optional<asio::posix::stream_descriptor> event_;  // owns the eventfd
  bool has_waitid_ = false;
  bool has_futex_wait_ = false;

  std::mutex mutex_;  // guards the SQ, the in-flight list, the flags below
  detail::uring_op* in_flight_ = nullptr;
  std::size_t untracked_ = 0;  // CQEs expected that belong to no op (cancel_fd)
  bool flush_posted_ = false;
  bool wait_armed_ = false;
  int draining_ = 0;                 // on_eventfd calls running: they submit at their end
  std::uint64_t event_buf_[2] = {};  // 16 bytes: an eventfd read of 8 is "exhausted"
  bool shut_down_ = false;
};

}  // namespace coproc
