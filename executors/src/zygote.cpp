#include "coproc/executors/detail/zygote.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <vector>

#include "coproc/runtime/detail/child_setup.hpp"
#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "process_tree.hpp"
#include "zygote_start.hpp"

namespace coproc::detail {

void die_with_parent_or_leave(pid_t parent, int sig) {
  if (!die_with_parent(parent, sig)) {
    ::_exit(worker_exit_orphaned);
  }
}

namespace {

bool write_report(int fd, const zygote_report& r) {
  return write_full(fd, &r, sizeof r);
}

class zygote {
 public:
  zygote(const worker_config& config, int cmd, int report, int sigfd, bool bad_image)
      : config_(config), cmd_(cmd), report_(report), sigfd_(sigfd), bad_image_(bad_image) {}

  [[noreturn]] void run() {
    for (;;) {
      pollfd fds[2] = {{cmd_, POLLIN, 0}, {sigfd_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        continue;  // EINTR
      }
      if (fds[1].revents & POLLIN) {
        if (take_signals()) {
          stop();  // SIGTERM: the host died (the death signal) or an operator asked
        }
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
      die_with_parent_or_leave(self);
      // A group of its own: a task's kill(0, sig) reaches this worker and
      // what it forked, and the zygote ends them all with one kill(-pid).
      own_process_group();
      adopt_orphans();  // a task's orphans stay in this worker's tree
      name_process("coproc-worker");
      if (bad_image_) {
        // An exec'd zygote whose code differs from the parent's: every
        // worker leaves at once, which the pool reports as a clean error.
        ::_exit(worker_exit_bad_image);
      }
      worker_main(config_, slot);
    }
    zygote_report r{};
    r.slot = slot;
    if (pid < 0) {
      r.kind = report_spawn_failed;
      r.error = errno;
    } else {
      ::setpgid(pid, pid);  // also here: the group exists before any kill(-pid)
      r.kind = report_spawned;
      r.pid = pid;
      workers_.push_back({pid, slot});
    }
    if (!write_report(report_, r)) {
      stop();
    }
  }

  /// Drains the signalfd; true when SIGTERM was among the signals.
  bool take_signals() {
    bool term = false;
    signalfd_siginfo info;
    while (::read(sigfd_, &info, sizeof info) == sizeof info) {
      term = term || info.ssi_signo == SIGTERM;
    }
    return term;
  }

  /// Ends the process group of a worker that left (its pid is its group's
  /// id, not reusable while the zombie is unreaped) and every orphan it left
  /// to this subreaper: a worker takes what its tasks forked with it.
  void end_leftovers(pid_t worker) {
    std::vector<pid_t> keep;
    for (const entry& e : workers_) {
      keep.push_back(e.pid);
    }
    if (worker > 0) {
      ::kill(-worker, SIGKILL);
      keep.push_back(worker);  // a zombie: reaped by the caller
    }
    kill_children_but(keep);
  }

  void reap() {
    for (;;) {
      // Who left, without reaping yet: the group is ended while the pid still
      // names it.
      siginfo_t left{};
      if (::waitid(P_ALL, 0, &left, WEXITED | WNOHANG | WNOWAIT) < 0 || left.si_pid == 0) {
        return;
      }
      pid_t pid = left.si_pid;
      auto it = std::find_if(workers_.begin(), workers_.end(),
                             [pid](const entry& e) { return e.pid == pid; });
      end_leftovers(it != workers_.end() ? pid : 0);
      int status = 0;
      rusage usage{};
      if (::wait4(pid, &status, WNOHANG, &usage) <= 0 || it == workers_.end()) {
        continue;  // an orphan re-parented here: reaped, nothing to report
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

  /// Kills every worker with its process group, then every orphan they
  /// leave to this subreaper, reaping until no child is left: no survivor,
  /// no zombie, grandchildren included.
  [[noreturn]] void stop() {
    for (const entry& e : workers_) {
      ::kill(-e.pid, SIGKILL);
      ::kill(e.pid, SIGKILL);
    }
    workers_.clear();
    end_leftovers(0);
    while (retry_eintr([] { return ::waitpid(-1, nullptr, 0); }) > 0) {
      end_leftovers(0);  // orphans the dead one left to us
    }                    // ECHILD: nothing left
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
  bool bad_image_;
  std::vector<entry> workers_;
};

}  // namespace

/// The zygote's life once it is a process of its own (forked, or exec'd and
/// configured): only its pipes and the doorbell stay open.
void serve(const worker_config& config, int cmd_read, int report_write, bool bad_image) {
  // A worker must not hold the host's sockets or files open.
  close_fds_except({cmd_read, report_write, config.doorbell_fd, config.output_fd});
  drop_foreign_shared_mappings(config);
  // SIGCHLD and SIGTERM arrive through the signalfd. SIGTERM is also the
  // death signal from here on (it was SIGKILL until now): a zygote whose
  // host died stops in order, ending its workers' process groups and the
  // orphans they leave, instead of dying at once and leaving them.
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGCHLD);
  sigaddset(&handled, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &handled, nullptr);
  int sigfd = ::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) {
    ::_exit(worker_exit_orphaned);
  }
  pid_t parent = ::getppid();
  die_with_parent_or_leave(parent, SIGTERM);
  own_process_group();  // out of the host's group: a task's kill(0, sig) cannot reach it
  adopt_orphans();      // a dead worker's orphans come here, to be ended
  name_process("coproc-zygote");
  zygote z(config, cmd_read, report_write, sigfd, bad_image);
  z.run();
}

pid_t fork_zygote(const worker_config& config, int cmd_read, int report_write) {
  if (config.options != nullptr && config.options->start_method == start_method::spawn) {
    return spawn_zygote(config, cmd_read, report_write);
  }
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
  die_with_parent_or_leave(parent);
  reset_signals(child_role::pool);
  serve(config, cmd_read, report_write, false);
}

}  // namespace coproc::detail
