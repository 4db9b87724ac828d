#pragma once
// Helpers for the process-shared sync primitive tests: fork a child that runs
// a function and leaves through _exit with its result, wait for it, and a
// one-byte pipe to order events between processes without sleeping.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "coproc/runtime/unique_fd.hpp"

namespace coproc::test {

/// Forks; the child runs `f()` (returning its exit code; an exception is
/// 99) and leaves with _exit, never returning into Catch2.
template <class F>
pid_t fork_child(F f) {
  pid_t pid = ::fork();
  if (pid < 0) {
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) {
    // Never outlive a test process that failed or was killed.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int code = 98;
    try {
      code = f();
    } catch (...) {
      code = 99;
    }
    ::_exit(code);
  }
  return pid;
}

/// Waits for `pid`; its exit code, or 128 + the signal that killed it.
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// A one-way pipe used as a latch between processes.
struct latch_pipe {
  latch_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    r.reset(fds[0]);
    w.reset(fds[1]);
  }
  void signal() const {
    char c = 1;
    while (::write(w.get(), &c, 1) != 1) {
    }
  }
  /// Blocks until signal() (true), or the writer closed (false).
  bool wait() const {
    char c = 0;
    for (;;) {
      ssize_t n = ::read(r.get(), &c, 1);
      if (n == 1) {
        return true;
      }
      if (n == 0) {
        return false;
      }
    }
  }
  unique_fd r, w;
};

}  // namespace coproc::test
