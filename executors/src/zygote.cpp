#include "coproc/executors/detail/zygote.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <vector>

#include "coproc/runtime/detail/system_error.hpp"

namespace coproc::detail {
namespace {

/// Dies with the parent: the death signal, then a check that closes the race
/// where the parent died before prctl ran.
void die_with_parent(pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) {
    ::_exit(worker_exit_orphaned);
  }
}

/// Closes every descriptor of the host but stdio and `keep`: a worker must not
/// hold the host's sockets or files open.
void close_all_but(std::vector<int> keep) {
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

bool write_report(int fd, const zygote_report& r) {
  const char* p = reinterpret_cast<const char*>(&r);
  std::size_t left = sizeof r;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  return true;
}

class zygote {
 public:
  zygote(const worker_config& config, int cmd, int report, int sigfd)
      : config_(config), cmd_(cmd), report_(report), sigfd_(sigfd) {}

  [[noreturn]] void run() {
    for (;;) {
      pollfd fds[2] = {{cmd_, POLLIN, 0}, {sigfd_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        continue;  // EINTR
      }
      if (fds[1].revents & POLLIN) {
        reap();
      }
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        zygote_command c{};
        ssize_t n = ::read(cmd_, &c, sizeof c);
        if (n == sizeof c && c.kind == zygote_spawn) {
          spawn(c.slot);
        } else if (n == 0 || (n == sizeof c && c.kind == zygote_stop) ||
                   (n < 0 && errno != EINTR)) {
          stop();
        }
      }
    }
  }

 private:
  void spawn(std::uint32_t slot) {
    pid_t self = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(cmd_);
      ::close(report_);
      ::close(sigfd_);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGCHLD, SIG_DFL);
      die_with_parent(self);
      worker_main(config_, slot);
    }
    zygote_report r{};
    r.slot = slot;
    if (pid < 0) {
      r.kind = report_spawn_failed;
      r.error = errno;
    } else {
      r.kind = report_spawned;
      r.pid = pid;
      workers_.push_back({pid, slot});
    }
    if (!write_report(report_, r)) {
      stop();
    }
  }

  void reap() {
    signalfd_siginfo info;
    while (::read(sigfd_, &info, sizeof info) == sizeof info) {
    }
    for (;;) {
      int status = 0;
      rusage usage{};
      pid_t pid = ::wait4(-1, &status, WNOHANG, &usage);
      if (pid <= 0) {
        return;
      }
      auto it = std::find_if(workers_.begin(), workers_.end(),
                             [pid](const entry& e) { return e.pid == pid; });
      if (it == workers_.end()) {
        continue;
      }
      zygote_report r{};
      r.kind = report_exited;
      r.slot = it->slot;
      r.pid = pid;
      r.wait_status = status;
      r.max_rss_kb = usage.ru_maxrss;
      workers_.erase(it);
      if (!write_report(report_, r)) {
        stop();
      }
    }
  }

  /// Kills and reaps every worker, then leaves: no orphan, no zombie.
  [[noreturn]] void stop() {
    for (const entry& e : workers_) {
      ::kill(e.pid, SIGKILL);
    }
    for (const entry& e : workers_) {
      while (::waitpid(e.pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    ::_exit(0);
  }

  struct entry {
    pid_t pid;
    std::uint32_t slot;
  };

  worker_config config_;
  int cmd_;
  int report_;
  int sigfd_;
  std::vector<entry> workers_;
};

}  // namespace

pid_t fork_zygote(const worker_config& config, int cmd_read, int report_write) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    throw_errno("fork");
  }
  if (pid > 0) {
    return pid;
  }
  // The zygote: single-threaded from here on; it must not touch the parent's
  // event loop or any object the parent owns besides the shared mapping.
  die_with_parent(parent);
  // The host's signal handlers belong to the host's event loop. Workers take
  // the defaults, but ignore the terminal's SIGINT: the parent decides what an
  // interrupt means, and workers die with it through the death signal.
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) {
      ::signal(sig, SIG_DFL);
    }
  }
  ::signal(SIGINT, SIG_IGN);
  close_all_but({cmd_read, report_write, config.doorbell_fd});
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  int sigfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) {
    ::_exit(worker_exit_orphaned);
  }
  ::prctl(PR_SET_NAME, "coproc-zygote");
  zygote z(config, cmd_read, report_write, sigfd);
  z.run();
}

}  // namespace coproc::detail
