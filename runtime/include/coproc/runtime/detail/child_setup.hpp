#pragma once
// What a process coproc forks does first: die with its parent, leave the
// host's process group, take a name, take the default signal actions. One
// place for it (the zygote and its workers use it; coproc::process may).

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

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

/// Every signal back to its default action (the host's handlers act on the
/// host's behalf), except SIGINT, ignored: the terminal's ^C belongs to the
/// host, and its children end with it through their death signal.
inline void default_signals() noexcept {
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) {
      ::signal(sig, SIG_DFL);
    }
  }
  ::signal(SIGINT, SIG_IGN);
}

}  // namespace coproc::detail
