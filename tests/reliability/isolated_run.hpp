#pragma once
// Runs a check in a forked child, so that a host that dies (SIGPIPE,
// SIGSEGV) or hangs fails the test instead of the test runner: the child's
// exit code is the check's verdict, a signal or a child still running at the
// deadline is the failure the test looks for.

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace coproc::test {

struct isolated_outcome {
  bool hung = false;  ///< still running at the deadline (then SIGKILLed)
  int code = -1;      ///< exit code, when it exited
  int signal = 0;     ///< the signal that ended it, when one did

  bool passed() const { return !hung && signal == 0 && code == 0; }
  std::string describe() const {
    if (hung) {
      return "hung (killed at the deadline)";
    }
    if (signal != 0) {
      return std::string("killed by signal ") + std::to_string(signal) + " (" +
             ::strsignal(signal) + ")";
    }
    return "exited with code " + std::to_string(code);
  }
};

/// Forks; the child resets the fatal signals Catch2 handles to their default
/// actions (a crash must show as a signal), runs `body()` (returns an exit
/// code) and leaves with _exit. The parent waits at most `deadline`.
template <class Body>
isolated_outcome run_isolated(Body body,
                              std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGPIPE, SIGTERM, SIGINT}) {
      ::signal(sig, SIG_DFL);
    }
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "isolated host: %s\n", e.what());
      code = 98;
    } catch (...) {
      code = 98;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  isolated_outcome out;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  pollfd p{pidfd, POLLIN, 0};
  if (pidfd >= 0 && ::poll(&p, 1, static_cast<int>(deadline.count())) == 0) {
    out.hung = true;
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (pidfd >= 0) {
    ::close(pidfd);
  }
  if (!out.hung) {
    if (WIFEXITED(status)) {
      out.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      out.signal = WTERMSIG(status);
    }
  }
  return out;
}

}  // namespace coproc::test
