#include "coproc/executors/process.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc {
namespace detail {
namespace {

// Writes the whole message with write(2): stdio may be in any state in a child.
void write_stderr(const std::string& text) noexcept {
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t r = ::write(STDERR_FILENO, p, left);
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;
    }
    p += r;
    left -= static_cast<std::size_t>(r);
  }
}

// The host's signal handlers serve the host (a self-pipe its loop watches, a
// test framework's reporter): in the child they would act on the parent's
// behalf, and a blocked SIGTERM would defeat terminate(). Handlers go back to
// their defaults (ignored signals stay ignored, as across exec) and nothing is
// blocked.
void reset_signals() noexcept {
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_DFL &&
        old.sa_handler != SIG_IGN) {
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(sig, &dfl, nullptr);
    }
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

[[noreturn]] void run_child(process_body& body, pid_t parent) noexcept {
  reset_signals();
  // Die with the parent; the getppid() check closes the race where the parent
  // died before prctl ran (the child was then already re-parented).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) {
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
    write_stderr(text);
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
