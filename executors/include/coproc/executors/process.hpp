#pragma once
/// coproc::process: one forked child running one function (Python's
/// multiprocessing.Process), with an async join.

#include <sys/types.h>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/io_context.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/process_body.hpp"
#include "coproc/executors/detail/task_checks.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/runtime/child_process.hpp"
#include "coproc/runtime/detail/context_executor.hpp"
#include "coproc/runtime/exit_status.hpp"

namespace coproc {

/// A child process running `fn(args...)` (Python's multiprocessing.Process
/// with the fork start method): construct, then start().
///
/// The callable follows the pool's rules (a function, a member pointer, a
/// captureless lambda, a declared task object; a lambda with captures is
/// refused at compile time: see coproc/executors/task_object.hpp), so the same
/// code could run in a spawned (exec) child later. Arguments are codable
/// values, or shared objects: a queue, joinable_queue, connection, sync
/// primitive, shared value or array, shared_memory, or a manager proxy, passed
/// as a named object and taken as `T&` by the function (the child reaches the
/// same object through its copy of the handle; coproc/ipc/process_shared.hpp):
///
///     void consume(coproc::queue<int>& q, int n) { ... q.get() ... }
///     coproc::process p(ex, consume, q, 100);
///
/// With fork the child shares the parent's memory image, so it calls
/// fn(args...) on its own copy of the arguments directly (nothing is encoded);
/// a return value is ignored (Python's shape: the exit code says how it went).
///
/// The child:
/// - dies with the thread that called start() (PR_SET_PDEATHSIG(SIGKILL), then
///   a getppid() check that closes the race with a parent dying first): start
///   from a long-lived thread (main or the loop thread), not a short-lived one;
/// - leaves with _exit: exit code 0 when fn returns, 1 when it throws (the
///   exception's type and message, as coproc::remote_error shows them, go to
///   stderr like Python's traceback); fn may call _exit(n) to choose a code.
///   stdio buffers are flushed before fork and before _exit; atexit handlers
///   and destructors of static objects do not run in the child;
/// - starts with the default action for every signal the host handles (the
///   host's handlers would act on the parent's behalf; ignored signals stay
///   ignored) and an empty signal mask, so terminate() works;
/// - is reaped through its pidfd (no SIGCHLD handler).
///
/// Forking from a process that has other threads: only the calling thread
/// exists in the child; a lock another thread held at fork() stays locked
/// there. glibc's malloc and stdio are safe; other libraries' locks may not
/// be, so a child of a threaded host should stick to its own data (or use a
/// process_pool, whose zygote forks before threads exist). The child must not
/// use the parent's io_context (it shares the parent's io_uring ring).
///
/// Destroying a started process that was not joined kills it (SIGKILL) and
/// reaps it: no child outlives its owner, no zombie is left.
/// Thread safety: distinct objects: safe; shared objects: unsafe.
class process {
 public:
  using executor_type = asio::any_io_executor;

  /// Prepares (does not start) a child that will run `fn(args...)`.
  /// @param ex the executor whose io_context runs async_join.
  template <class F, class... Args>
  process(const executor_type& ex, F fn, Args&&... args) : ex_(ex) {
    if constexpr (detail::check_process<F, Args...>()) {
      body_ = std::make_unique<detail::process_body_impl<F, detail::process_stored_t<Args>...>>(
          std::move(fn), detail::process_store<Args>(std::forward<Args>(args))...);
    }
  }
  /// The same on `ctx`'s executor, as Asio's own I/O objects accept either.
  template <class F, class... Args>
  process(asio::io_context& ctx, F fn, Args&&... args)
      : process(detail::context_executor(ctx), std::move(fn), std::forward<Args>(args)...) {}
  process(process&&) noexcept = default;
  process& operator=(process&&) noexcept = default;
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  ~process() = default;  // child_process kills and reaps an unjoined child

  executor_type get_executor() const noexcept { return ex_; }

  /// Forks the child. Throws std::logic_error when already started,
  /// std::system_error naming fork or pidfd_open.
  void start();

  /// Waits for the child to end and reaps it.
  ///
  /// Completion signature: void(std::error_code, coproc::exit_status).
  /// The status is lost, and the error names why, when something else in the
  /// host took it: SIGCHLD ignored (`signal(SIGCHLD, SIG_IGN)` or
  /// SA_NOCLDWAIT: the kernel reaps children at once) gives
  /// `errc::child_status_discarded`; a `waitpid(-1, ...)` or a SIGCHLD
  /// handler that reaps every child gives `errc::child_reaped_elsewhere`. A
  /// host that reaps children itself should wait for specific pids instead.
  /// Cancellation: terminal, partial, total; the child keeps running and may
  /// be joined again.
  /// Throws std::logic_error when not started.
  template <class Token>
  auto async_join(Token&& token) {
    if (!child_) {
      throw std::logic_error("coproc::process::async_join before start()");
    }
    return asio::async_initiate<Token, void(std::error_code, exit_status)>(
        [](auto handler, child_process* child, const executor_type& ex) {
          // The handler's executor and cancellation slot stay its own; only
          // a lost status (ECHILD) is renamed after its cause.
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto handler_ex = asio::get_associated_executor(handler, ex);
          child->async_wait_exit(
              ex, asio::bind_cancellation_slot(
                      slot, asio::bind_executor(
                                handler_ex, [h = std::move(handler)](std::error_code ec,
                                                                     exit_status status) mutable {
                                  std::move(h)(detail::join_error(ec), status);
                                })));
        },
        token, &child_, ex_);
  }

  /// Sends SIGTERM (Python's terminate()). No-op once the child was reaped.
  void terminate();
  /// Sends SIGKILL (Python's kill()). No-op once the child was reaped.
  void kill();

  /// The child's pid, or -1 before start().
  pid_t pid() const noexcept { return child_.pid(); }
  /// True between start() and the child's end (checked with waitid(WNOHANG |
  /// WNOWAIT): does not reap).
  bool is_alive() const;
  /// Python's exitcode: nullopt while running (or before start), the exit
  /// status when it exited, minus the signal number when a signal killed it.
  std::optional<int> exit_code() const;
  /// The full status once the child was reaped (by async_join).
  std::optional<exit_status> status() const { return child_ ? child_.status() : std::nullopt; }

 private:
  executor_type ex_;
  std::unique_ptr<detail::process_body> body_;
  child_process child_;
};

}  // namespace coproc
