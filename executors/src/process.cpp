#include "coproc/executors/process.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/detail/child_setup.hpp"
#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc {
namespace detail {
namespace {

[[noreturn]] void run_child(process_body& body, pid_t parent) noexcept {
  reset_signals(child_role::user);
  if (!die_with_parent(parent)) {
    ::_exit(1);
  }
  int code = 0;
  try {
    body.run();
  } catch (...) {
    std::string text;
    try {
      text = "coproc::process " + std::to_string(::getpid()) +
             ": uncaught exception: " + capture_current_exception().what() + "\n";
    } catch (...) {
      text = "coproc::process: uncaught exception\n";
    }
    std::fflush(nullptr);
    // write(2), not stdio: stdio may be in any state in a child.
    write_full(STDERR_FILENO, text.data(), text.size());
    code = 1;
  }
  std::fflush(nullptr);
  ::_exit(code);
}

}  // namespace

child_process fork_process(process_body& body) {
  std::fflush(nullptr);  // or the child would flush the parent's pending output again
  pid_t parent = ::getpid();
  // Signals stay blocked across fork until the child reset its handlers: a
  // terminate() right after start() must not run a host handler in the child.
  sigset_t all;
  sigset_t saved;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = ::fork();
  if (pid == 0) {
    run_child(body, parent);
  }
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    throw std::system_error(fork_errno, std::system_category(), "fork");
  }
  try {
    return child_process::adopt(pid);
  } catch (const std::system_error& e) {
    // A host that ignores SIGCHLD has its children reaped by the kernel the
    // moment they end: one that ended at once is gone before pidfd_open.
    if (e.code() == std::errc::no_such_process &&
        join_error(std::make_error_code(std::errc::no_child_process)) ==
            coproc::errc::child_status_discarded) {
      throw std::system_error(coproc::errc::child_status_discarded,
                              "coproc::process::start: the child ended before it could be watched");
    }
    throw;
  }
}

namespace {

bool sigchld_ignored() noexcept {
  struct sigaction chld {};
  ::sigaction(SIGCHLD, nullptr, &chld);
  return chld.sa_handler == SIG_IGN || (chld.sa_flags & SA_NOCLDWAIT) != 0;
}

}  // namespace

std::error_code join_error(std::error_code ec) noexcept {
  if (ec != std::errc::no_child_process) {
    return ec;
  }
  return sigchld_ignored() ? coproc::errc::child_status_discarded
                           : coproc::errc::child_reaped_elsewhere;
}

}  // namespace detail

void process::start() {
  if (child_) {
    throw std::logic_error("coproc::process::start called twice");
  }
  child_ = detail::fork_process(*body_);
}

void process::terminate() {
  if (child_ && !child_.status()) {
    child_.send_signal(SIGTERM);
  }
}

void process::kill() {
  if (child_ && !child_.status()) {
    child_.send_signal(SIGKILL);
  }
}

namespace {

// The child's end state without reaping it: zero si_pid while it runs.
bool peek_exit(const child_process& child, siginfo_t& info) {
  info = {};
  int r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(child.pidfd()), &info,
                   WEXITED | WNOHANG | WNOWAIT);
  return r == 0 && info.si_pid != 0;
}

}  // namespace

bool process::is_alive() const {
  if (!child_ || child_.status()) {
    return false;
  }
  siginfo_t info;
  return !peek_exit(child_, info);
}

std::optional<int> process::exit_code() const {
  if (!child_) {
    return std::nullopt;
  }
  if (auto st = child_.status()) {
    return st->exited ? st->code : -st->signal;
  }
  siginfo_t info;
  if (!peek_exit(child_, info)) {
    return std::nullopt;
  }
  return info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
}

}  // namespace coproc
