#pragma once
/// coproc::uring_service: the I/O service of one asio::io_context: an
/// io_uring ring bridged into the io_context through a registered eventfd, or,
/// where io_uring is refused, Asio's own reactor (epoll).

#include <liburing.h>
#include <sys/types.h>

#include <asio/any_io_executor.hpp>
#include <asio/execution_context.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/query.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "coproc/runtime/detail/interest_set.hpp"
#include "coproc/runtime/detail/io_op.hpp"
#include "coproc/runtime/io_backend.hpp"

namespace coproc {
namespace detail {
class futex_watcher;
}  // namespace detail

/// Options of a uring_service; set with designated initialisers.
struct uring_options {
  /// The backend. Unset: the environment variable COPROC_IO_BACKEND
  /// (`uring`, `epoll`, `auto`) if set, else io_backend::automatic. Set: wins
  /// over the variable.
  std::optional<io_backend> backend{};
  /// Submission queue entries (the completion queue gets twice as many).
  unsigned entries = 256;
  /// Use IORING_OP_WAITID when the kernel has it (false forces the POLL_ADD on
  /// pidfd fallback: for tests and for comparing the two paths).
  bool use_waitid = true;
  /// Use IORING_OP_FUTEX_WAIT when the kernel has it (false sends futex waits
  /// through the futex watcher threads, as the epoll backend does).
  bool use_futex_wait = true;
};

/// The I/O service of one asio::io_context, on one of two backends chosen at
/// construction (see io_backend):
///
/// - uring: the ring's completions raise a registered eventfd that the
///   io_context waits on (no Asio configuration macro is needed in the host);
///   completions are drained in batches on the io_context's thread;
///   submissions are flushed with one io_uring_submit per loop turn.
/// - epoll: each operation is tried without blocking on the io_context's
///   thread; when it would block it waits for readiness on Asio's reactor (a
///   registered duplicate of the fd) or, for futex waits, on a futex watcher
///   thread.
///
/// Operations, their cancellation and completion are the same on both.
///
/// Obtain it with `uring_service::of(executor)` or
/// `asio::use_service<uring_service>(io_context)`; to choose options, call
/// `uring_service::install(ctx, {...})` before the first use.
///
/// Throws (construction): std::system_error with coproc::errc::uring_unavailable
/// only when io_backend::uring was asked for (option or COPROC_IO_BACKEND) and
/// the kernel refuses it; std::invalid_argument for a bad COPROC_IO_BACKEND or
/// when the execution_context is not an asio::io_context; std::system_error
/// naming the call for other setup failures.
///
/// Thread safety: operations may be started and cancelled from any thread
/// (under an internal mutex); completions run on a thread running the
/// io_context, through each handler's associated executor.
///
/// fork(): a child's copy may be destroyed (with the io_context), and I/O
/// objects in it closed: nothing the parent shares is touched (no cancel
/// reaches the ring, no registration leaves Asio's epoll instance, no thread
/// of the parent is joined) and pending ops are dropped without completion.
/// Running the inherited io_context in the child is not supported.
class uring_service final : public asio::execution_context::service {
 public:
  using key_type = uring_service;
  static inline asio::execution_context::id id;

  /// Creates the service for `ctx` on the backend `options` select.
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

  /// The backend this service runs: io_backend::uring or io_backend::epoll.
  io_backend backend() const noexcept { return backend_; }
  /// Why io_uring is not used (empty when it is): the refused call and its
  /// error, or the option or variable that chose epoll.
  const std::string& fallback_reason() const noexcept { return fallback_reason_; }

  /// Whether IORING_OP_WAITID / IORING_OP_FUTEX_WAIT are used (probed once at
  /// construction, and allowed by the options; false on the epoll backend).
  bool has_waitid() const noexcept { return has_waitid_; }
  bool has_futex_wait() const noexcept { return has_futex_wait_; }

  /// Machinery for the async operations (coproc::detail): starts `op` (its
  /// SQE queued for the next flush, or its first attempt posted).
  void start(detail::io_op* op);
  /// Withdraws `op` if it is still in flight; it completes once both its own
  /// event and the cancel's have arrived.
  void cancel(detail::io_op* op) noexcept;
  /// Cancels every operation on `fd` at once (used by I/O objects about to
  /// close `fd`: the cancel must reach the kernel, or the fd leave the epoll
  /// backend's interest set, while fd is open).
  void cancel_fd(int fd) noexcept;

 private:
  static uring_service& of_any(const asio::any_io_executor& ex, asio::execution_context& ctx);
  void shutdown() override;
  void finish_event(detail::io_op* op, bool own, int res) noexcept;
  void cancel_locked(detail::io_op* op, std::vector<detail::io_op*>& aborted) noexcept;

  // Futex waits through the watcher (both backends; uring_service.cpp).
  void watch_futex(detail::io_op* op);
  void watch_futex_now(detail::io_op* op);
  detail::futex_watcher& watcher();

  // io_uring backend (ring_backend.cpp); *_locked: with mutex_ held.
  bool ring_open(const uring_options& options);
  void ring_start(detail::io_op* op);
  void ring_cancel(detail::io_op* op) noexcept;
  void ring_cancel_fd(int fd) noexcept;
  void ring_shutdown(std::unique_lock<std::mutex>& lock) noexcept;
  io_uring_sqe* get_sqe_locked();
  void request_flush_locked();
  void arm_wait_locked();
  void flush();
  void submit_and_drain();
  void rearm_if_busy_locked();
  void release_wait_if_idle_locked();
  void on_eventfd();
  void drain();

  // epoll backend (reactor_backend.cpp).
  void reactor_open();
  void reactor_start(detail::io_op* op);
  void reactor_step(detail::io_op* op);
  void arm_interest_locked();
  bool reactor_cancel_locked(detail::io_op* op);

  // A forked child's copy of the service shares the ring, Asio's epoll
  // instance and the interest set with this process and has none of its
  // threads: it must leave all of them alone (abandon_inherited()).
  bool inherited() const noexcept;
  void abandon_inherited() noexcept;

  asio::io_context* ctx_ = nullptr;
  pid_t owner_ = 0;
  io_backend backend_ = io_backend::epoll;
  std::string fallback_reason_;
  bool has_waitid_ = false;
  bool has_futex_wait_ = false;

  std::mutex mutex_;  // guards the SQ, the in-flight list and every flag below
  detail::op_list in_flight_;
  bool shut_down_ = false;
  std::unique_ptr<detail::futex_watcher> watcher_;  // created at the first watched wait

  std::optional<detail::interest_set> interest_;                   // epoll backend
  std::unique_ptr<asio::posix::stream_descriptor> interest_wait_;  // Asio's view of its fd
  bool interest_armed_ = false;

  io_uring ring_{};
  bool ring_ready_ = false;
  std::unique_ptr<asio::posix::stream_descriptor> event_;  // owns the ring's eventfd
  std::size_t untracked_ = 0;  // CQEs expected that belong to no op (cancel_fd)
  bool flush_posted_ = false;
  bool wait_armed_ = false;
  int draining_ = 0;                 // on_eventfd calls running: they submit at their end
  std::uint64_t event_buf_[2] = {};  // 16 bytes: an eventfd read of 8 is "exhausted"
};

}  // namespace coproc
