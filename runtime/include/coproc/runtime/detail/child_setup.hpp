#pragma once
// What a process coproc forks does first: die with its parent, leave the
// host's process group, take a name, take its signal dispositions, close
// what it must not hold. One place for it: the zygote, its workers and
// coproc::process's child use it.

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace coproc::detail {

/// Arms the parent-death signal `sig`, then checks that the parent is still
/// `parent` (it may have died before prctl ran). False when it is gone: the
/// caller leaves. The kernel clears the death signal on setuid/setgid and a
/// task may clear it itself: re-arm after running foreign code.
inline bool die_with_parent(pid_t parent, int sig = SIGKILL) noexcept {
  ::prctl(PR_SET_PDEATHSIG, sig);
  return ::getppid() == parent;
}

/// Makes this process the leader of a process group of its own: a
/// kill(0, sig) from inside reaches this group only, never the host's, and
/// the terminal's ^C (sent to the foreground group) does not reach it.
inline void own_process_group() noexcept {
  ::setpgid(0, 0);
}

/// The name `ps` and /proc/PID/comm show (at most 15 characters).
inline void name_process(const char* name) noexcept {
  ::prctl(PR_SET_NAME, name);
}

/// Orphans among this process's descendants are re-parented to it rather
/// than to init, so it can find and end them.
inline void adopt_orphans() noexcept {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
}

/// Closes every descriptor but stdio and `keep` (fd hygiene: a child of
/// coproc's must not keep the host's sockets and files open). coproc::process
/// does not call it: like Python's fork start method, its child keeps what
/// the parent had open (every fd coproc opens is close-on-exec).
inline void close_fds_except(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned first = 3;
  for (int fd : keep) {
    if (fd >= static_cast<int>(first)) {
      if (fd > static_cast<int>(first)) {
        ::close_range(first, static_cast<unsigned>(fd) - 1, 0);
      }
      first = static_cast<unsigned>(fd) + 1;
    }
  }
  ::close_range(first, ~0U, 0);
}

/// Whom a forked process serves, which decides its signal dispositions.
enum class child_role {
  pool,  ///< the zygote and its workers: coproc's own processes
  user,  ///< coproc::process's child: the user's process, Python's Process
};

/// The signal policy of every process coproc forks.
///
/// Both: a handler the host installed goes back to SIG_DFL. It serves the
/// host (a self-pipe its loop watches, a test framework's reporter) and in a
/// child would act on the host's behalf. No SIGCHLD handler is ever set.
///
/// child_role::pool: every disposition back to its default, ignored ones
/// included (a task gets the process a fresh program would), then SIGINT
/// ignored: the terminal's ^C belongs to the host, whose event loop decides
/// what it means, and pool processes end with the host through their death
/// signal (they lead process groups of their own, so ^C does not reach them
/// either). The signal mask is left as it is: the zygote blocks what its
/// signalfd reads, and a worker clears the mask when it is forked.
///
/// child_role::user: signals the host ignores stay ignored (as across an
/// exec, and as in Python's fork start method), SIGINT keeps its default
/// (the child is in the host's process group, and ^C stops both, as in
/// Python), and the mask is cleared: a blocked SIGTERM would defeat
/// process::terminate().
inline void reset_signals(child_role role) noexcept {
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) {
      continue;
    }
    if (role == child_role::pool) {
      ::signal(sig, SIG_DFL);
      continue;
    }
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_DFL &&
        old.sa_handler != SIG_IGN) {
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(sig, &dfl, nullptr);
    }
  }
  if (role == child_role::pool) {
    ::signal(SIGINT, SIG_IGN);
    return;
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

}  // namespace coproc::detail
