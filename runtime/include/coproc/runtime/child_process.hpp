#pragma once
/// coproc::child_process: RAII owner of a child (pid + pidfd), with an async
/// wait for its exit on the io_uring ring.

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

#include "coproc/runtime/detail/child_wait_op.hpp"
#include "coproc/runtime/detail/io_handler_op.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc {

/// Owns a child process of this process: its pid and its pidfd (close-on-exec).
///
/// The child is reaped through its pidfd (no SIGCHLD handler is ever
/// installed). A child still unreaped when the object is destroyed is killed
/// with SIGKILL and reaped at once (blocking, but a SIGKILLed process exits
/// promptly): no zombie is left behind.
/// Thread safety: distinct objects: safe; shared objects: unsafe.
class child_process {
 public:
  child_process() noexcept = default;
  child_process(child_process&&) noexcept = default;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() { kill_and_reap(); }

  /// Takes ownership of `pid`, an unreaped child of this process, through
  /// pidfd_open. Throws std::system_error naming pidfd_open.
  static child_process adopt(pid_t pid);

  /// Forks; the child runs `fn()` and leaves with _exit(fn's int result, or 0
  /// for void; 127 if it throws). The child must only do fork-safe work when
  /// the parent has threads. Throws std::system_error naming fork.
  template <class Fn>
  static child_process fork_child(Fn&& fn) {
    pid_t pid = ::fork();
    if (pid < 0) {
      throw std::system_error(errno, std::system_category(), "fork");
    }
    if (pid == 0) {
      int code = 0;
      try {
        if constexpr (std::is_void_v<std::invoke_result_t<Fn&>>) {
          fn();
        } else {
          code = static_cast<int>(fn());
        }
      } catch (...) {
        code = 127;
      }
      ::_exit(code);
    }
    return adopt(pid);
  }

  explicit operator bool() const noexcept { return static_cast<bool>(state_); }
  pid_t pid() const noexcept { return state_ ? state_->pid : -1; }
  int pidfd() const noexcept { return state_ ? state_->pidfd.get() : -1; }

  /// Sends `sig` through the pidfd (pidfd_send_signal: never hits a recycled
  /// pid). A child that is already reaped or gone is not an error. Throws
  /// std::system_error naming pidfd_send_signal on other failures.
  void send_signal(int sig);

  /// The exit status once the child was reaped (by a wait or kill_and_reap).
  std::optional<exit_status> status() const;

  /// SIGKILL then blocking reap, unless already reaped. Returns the status
  /// (nullopt for an empty object). Never throws.
  std::optional<exit_status> kill_and_reap() noexcept;

  /// Waits for the child to end and reaps it (IORING_OP_WAITID with
  /// WEXITED|WNOWAIT|__WALL, then waitid with rusage for ru_maxrss; without
  /// WAITID, IORING_OP_POLL_ADD on the pidfd then the same reap; on the epoll
  /// backend, readiness of the pidfd in Asio's reactor then the same reap).
  ///
  /// Completion signature: void(std::error_code, coproc::exit_status). A child
  /// reaped by someone else (e.g. a host's waitpid(-1)) gives
  /// std::errc::no_child_process.
  /// Cancellation: terminal, partial, total (the child keeps running; a later
  /// wait may be started).
  /// Throws std::logic_error for an empty object.
  template <class Token>
  auto async_wait_exit(const asio::any_io_executor& ex, Token&& token) {
    if (!state_) {
      throw std::logic_error("coproc::child_process::async_wait_exit on an empty object");
    }
    return asio::async_initiate<Token, void(std::error_code, exit_status)>(
        [](auto&& handler, const asio::any_io_executor& io_ex,
           std::shared_ptr<detail::child_state> state) {
          uring_service& service = uring_service::of(io_ex);
          detail::launch_io_op<detail::wait_exit_impl>(service, io_ex,
                                                       std::forward<decltype(handler)>(handler),
                                                       std::move(state), service.has_waitid());
        },
        token, ex, state_);
  }

 private:
  std::shared_ptr<detail::child_state> state_;
};

}  // namespace coproc
