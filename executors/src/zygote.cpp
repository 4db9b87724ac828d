#include "coproc/executors/detail/zygote.hpp"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/program_image.hpp"
#include "coproc/runtime/detail/child_setup.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "process_tree.hpp"

extern "C" char** environ;

namespace coproc::detail {
namespace {

/// Dies with the parent (`sig` when it dies), or leaves now if it already did.
void die_with_parent_or_leave(pid_t parent, int sig = SIGKILL) {
  if (!die_with_parent(parent, sig)) {
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
    for (;;) {
      pid_t pid = ::waitpid(-1, nullptr, 0);
      if (pid < 0 && errno == EINTR) {
        continue;
      }
      if (pid < 0) {
        break;  // ECHILD: nothing left
      }
      end_leftovers(0);  // orphans the dead one left to us
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
  bool bad_image_;
  std::vector<entry> workers_;
};

/// The host's signal handlers belong to the host's event loop. Workers take
/// the defaults, but ignore the terminal's SIGINT: the parent decides what an
/// interrupt means, and workers die with it through the death signal.
void reset_signals() {
  default_signals();
}

/// The zygote's life once it is a process of its own (forked, or exec'd and
/// configured): only its pipes and the doorbell stay open.
[[noreturn]] void serve(const worker_config& config, int cmd_read, int report_write,
                        bool bad_image) {
  close_all_but({cmd_read, report_write, config.doorbell_fd, config.output_fd});
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

// ---- start_method::spawn -------------------------------------------------
//
// The parent posix_spawns /proc/self/exe (the very inode it runs) with the
// zygote's fds inherited and COPROC_ZYGOTE=<fd> in the environment. In the new
// image, spawn_entry (a constructor of this translation unit, which any
// program using process_pool links) reads the configuration from that fd,
// runs the program's remaining static initializers, checks that its code is
// the parent's, maps the pool's memfd and becomes the same zygote as above.

struct image_scan {
  spawn_image_id id;
  bool anchor_in_exe = false;  // image_anchor's code is mapped from /proc/self/exe
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> code;  // [begin, end)
};

/// Device and inode of the file whose mapping holds `p` (from /proc/self/maps).
bool mapped_file(const void* p, std::uint64_t& dev, std::uint64_t& ino) {
  std::ifstream maps("/proc/self/maps");
  auto a = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long begin = 0, end = 0, offset = 0, inode = 0;
    unsigned major = 0, minor = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s %lx %x:%x %lu", &begin, &end, perms, &offset, &major,
                    &minor, &inode) == 7 &&
        a >= begin && a < end) {
      dev = makedev(major, minor);
      ino = inode;
      return inode != 0;
    }
  }
  return false;
}

image_scan scan_image() {
  image_scan s;
  program_image image = scan_program_image();
  s.code = std::move(image.code);
  if (image.build_id.size() <= sizeof s.id.build_id) {
    s.id.build_id_len = static_cast<std::uint32_t>(image.build_id.size());
    std::memcpy(s.id.build_id, image.build_id.data(), image.build_id.size());
  }
  s.id.anchor_offset =
      static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(&image_anchor) - image.load_bias);
  struct stat st {};
  if (::stat("/proc/self/exe", &st) == 0) {
    s.id.exe_dev = st.st_dev;
    s.id.exe_ino = st.st_ino;
    // Not so when the program was run as `ld.so PROGRAM` (/proc/self/exe is
    // then the loader) or coproc lives in a shared library.
    std::uint64_t dev = 0, ino = 0;
    s.anchor_in_exe = mapped_file(reinterpret_cast<const void*>(&image_anchor), dev, ino) &&
                      dev == s.id.exe_dev && ino == s.id.exe_ino;
  }
  return s;
}

bool in_code(const image_scan& s, const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  return std::any_of(s.code.begin(), s.code.end(),
                     [a](const auto& r) { return a >= r.first && a < r.second; });
}

static_assert(sizeof(spawn_wire) <= PIPE_BUF, "written whole before the zygote exists");

bool same_image(const spawn_image_id& a, const spawn_image_id& b) {
  return a.build_id_len == b.build_id_len &&
         std::memcmp(a.build_id, b.build_id, a.build_id_len) == 0 &&
         a.anchor_offset == b.anchor_offset && a.exe_dev == b.exe_dev && a.exe_ino == b.exe_ino;
}

// True while a spawned zygote runs the program's static initializers: a
// spawn pool created there would exec yet another zygote, and so on.
bool bootstrapping = false;

/// The initializer as a code offset, or a readable refusal.
std::int64_t initializer_offset(const std::function<void()>& init, const image_scan& image) {
  auto* const* fn = init.target<void (*)()>();
  if (fn == nullptr || *fn == nullptr) {
    throw std::invalid_argument(
        "coproc::process_pool: with start_method::spawn, pool_options::initializer must be "
        "empty or hold a plain function pointer void(*)() (a function, or a captureless "
        "lambda converted with unary +): the worker runs in a separately exec'd image, where "
        "only code can be named, not a function object's state");
  }
  if (!in_code(image, reinterpret_cast<const void*>(*fn))) {
    throw std::invalid_argument(
        "coproc::process_pool: with start_method::spawn, the initializer must be a function "
        "of the main executable (not of a shared library)");
  }
  return code_offset(reinterpret_cast<const void*>(*fn));
}

/// The first argument of this process's command line, for the zygote's argv[0].
std::string own_argv0() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string arg0;
  std::getline(in, arg0, '\0');
  return arg0.empty() ? std::string("coproc-zygote") : arg0;
}

pid_t spawn_zygote(const worker_config& config, int cmd_read, int report_write) {
  if (bootstrapping) {
    throw std::logic_error(
        "coproc::process_pool: a start_method::spawn pool cannot be created by a static "
        "initializer of a spawned zygote (it would exec zygotes without end): create pools "
        "in main()");
  }
  const pool_options& o = *config.options;
  image_scan image = scan_image();
  if (!in_code(image, reinterpret_cast<const void*>(&image_anchor))) {
    throw std::invalid_argument(
        "coproc::process_pool: start_method::spawn needs coproc linked into the executable "
        "(its static libraries): code offsets are taken from the main program");
  }
  if (!image.anchor_in_exe) {
    throw std::invalid_argument(
        "coproc::process_pool: start_method::spawn execs /proc/self/exe, but coproc's code is "
        "not mapped from that file (the program was run as `ld.so PROGRAM`, or coproc is a "
        "shared library)");
  }
  spawn_wire w{};
  w.magic = spawn_wire_magic;
  w.parent = ::getpid();
  w.cmd_fd = cmd_read;
  w.report_fd = report_write;
  w.doorbell_fd = config.doorbell_fd;
  w.memfd = config.memfd;
  w.output_fd = config.output_fd;
  if (o.initializer) {
    w.has_initializer = 1;
    w.initializer = initializer_offset(o.initializer, image);
  }
  w.slots = config.geometry.slots;
  w.ring_bytes = config.geometry.ring_bytes;
  w.arena_bytes = config.geometry.arena_bytes;
  w.max_tasks_per_worker = o.max_tasks_per_worker;
  w.max_worker_rss = o.max_worker_rss;
  w.task_timeout_ms = o.task_timeout.count();
  w.limit_address_space = o.limits.address_space;
  w.limit_cpu_seconds = o.limits.cpu_seconds;
  w.limit_open_files = o.limits.open_files;
  w.idle_priority = o.idle_priority ? 1 : 0;
  w.image = image.id;
  if (config.memfd < 0) {
    throw std::invalid_argument("coproc::process_pool: start_method::spawn needs the memfd");
  }

  int ends[2];
  check_syscall(::pipe2(ends, O_CLOEXEC), "pipe2");
  unique_fd wire_read(ends[0]);
  unique_fd wire_write(ends[1]);
  // Fits the pipe's buffer: written whole before the child exists.
  if (::write(wire_write.get(), &w, sizeof w) != static_cast<ssize_t>(sizeof w)) {
    throw_errno("write");
  }
  std::string arg0 = own_argv0();
  std::string marker = std::string(spawn_marker) + "=" + std::to_string(wire_read.get());
  std::vector<char*> argv{arg0.data(), nullptr};
  std::vector<char*> envp;
  std::size_t marker_len = std::strlen(spawn_marker);
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, spawn_marker, marker_len) != 0 || (*e)[marker_len] != '=') {
      envp.push_back(*e);
    }
  }
  envp.push_back(marker.data());
  envp.push_back(nullptr);

  // posix_spawn is fork and exec without copying this process: glibc clones
  // with CLONE_VM | CLONE_VFORK, so a host with threads or a large address
  // space pays neither a page-table copy nor the fork-in-threads hazards, and
  // an exec failure comes back here as an error. dup2(fd, fd) in the child
  // clears FD_CLOEXEC on exactly the fds the zygote needs; every other fd of
  // this process stays close-on-exec. The death signal is set after the exec
  // (spawn_entry), where a getppid check closes the window before it.
  struct file_actions {
    posix_spawn_file_actions_t fa;
    file_actions() { ::posix_spawn_file_actions_init(&fa); }
    ~file_actions() { ::posix_spawn_file_actions_destroy(&fa); }
    file_actions(const file_actions&) = delete;
    file_actions& operator=(const file_actions&) = delete;
  } actions;
  for (int fd : {wire_read.get(), cmd_read, report_write, config.doorbell_fd, config.memfd,
                 config.output_fd}) {
    if (fd < 0) {
      continue;  // no output relay
    }
    if (int rc = ::posix_spawn_file_actions_adddup2(&actions.fa, fd, fd); rc != 0) {
      throw_errno("posix_spawn_file_actions_adddup2", rc);
    }
  }
  pid_t pid = -1;
  if (int rc =
          ::posix_spawn(&pid, "/proc/self/exe", &actions.fa, nullptr, argv.data(), envp.data());
      rc != 0) {
    throw_errno("posix_spawn", rc);
  }
  return pid;
}

/// Reads exactly `size` bytes (the wire is in the pipe before the exec).
bool read_all(int fd, void* out, std::size_t size) {
  auto* p = static_cast<char*>(out);
  while (size > 0) {
    ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

using init_fn = void (*)(int, char**, char**);

}  // namespace

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
  reset_signals();
  serve(config, cmd_read, report_write, false);
}

}  // namespace coproc::detail

// The linker's bounds of the executable's .init_array (hidden: this object's
// own executable, which spawn_zygote checked holds image_anchor).
extern "C" {
extern coproc::detail::init_fn __init_array_start[] __attribute__((visibility("hidden")));
extern coproc::detail::init_fn __init_array_end[] __attribute__((visibility("hidden")));
}

namespace coproc::detail {
namespace {

/// Runs before main in every program that links process_pool. Without the
/// marker it returns at once; with it, this process is a spawned zygote: it
/// never returns to the C runtime, so main never runs.
__attribute__((constructor)) void spawn_entry(int argc, char** argv, char** envp) {
  const char* marker = ::getenv(spawn_marker);
  if (marker == nullptr) {
    return;
  }
  char* end = nullptr;
  long wire_fd = std::strtol(marker, &end, 10);
  ::unsetenv(spawn_marker);  // not for the workers, nor their children
  spawn_wire w{};
  struct stat st {};
  if (end == marker || *end != '\0' || wire_fd < 0 || wire_fd > INT_MAX ||
      ::fstat(static_cast<int>(wire_fd), &st) != 0 || !S_ISFIFO(st.st_mode) ||
      !read_all(static_cast<int>(wire_fd), &w, sizeof w) || w.magic != spawn_wire_magic) {
    // Started as a zygote but not configured as one: running main would
    // duplicate the host program, so leave, saying why.
    static const char msg[] =
        "coproc: COPROC_ZYGOTE is set but names no zygote configuration (it is for coproc's "
        "own use: unset it)\n";
    [[maybe_unused]] ssize_t n = ::write(2, msg, sizeof msg - 1);
    ::_exit(worker_exit_bad_image);
  }
  ::close(static_cast<int>(wire_fd));
  // A parent that died since posix_spawn left us to init (or a subreaper):
  // getppid tells, after the death signal is armed.
  die_with_parent_or_leave(w.parent);
  reset_signals();
  // The program's static initializers after this one: a task may rely on
  // its globals as it does in a forked worker (the spawn analogue of Python
  // re-importing the main module). Earlier ones already ran.
  bootstrapping = true;
  bool after = false;
  for (init_fn* f = __init_array_start; f != __init_array_end; ++f) {
    if (after) {
      (*f)(argc, argv, envp);
    } else if (*f == &spawn_entry) {
      after = true;
    }
  }
  bootstrapping = false;
  pool_geometry geometry{w.slots, w.ring_bytes, w.arena_bytes};
  void* base = ::mmap(nullptr, geometry.total(), PROT_READ | PROT_WRITE, MAP_SHARED, w.memfd, 0);
  ::close(w.memfd);
  if (base == MAP_FAILED) {
    ::_exit(worker_exit_orphaned);
  }
  image_scan own = scan_image();
  bool bad_image = !own.anchor_in_exe || !same_image(w.image, own.id);
  // Workers jump only into the main program's code (checked_code_address).
  auto& allowed = allowed_code();
  for (const auto& [begin, end] : own.code) {
    if (allowed.count == worker_code_ranges::max_ranges) {
      bad_image = true;  // never seen: an executable has one or two code segments
      break;
    }
    allowed.begin[allowed.count] = begin;
    allowed.end[allowed.count] = end;
    ++allowed.count;
  }
  static pool_options options;  // what the workers read through config.options
  options.workers = w.slots;
  options.max_tasks_per_worker = w.max_tasks_per_worker;
  options.max_worker_rss = w.max_worker_rss;
  options.task_timeout = std::chrono::milliseconds(w.task_timeout_ms);
  options.limits = {w.limit_address_space, w.limit_cpu_seconds, w.limit_open_files};
  options.idle_priority = w.idle_priority != 0;
  options.start_method = start_method::spawn;
  if (w.has_initializer != 0 && !bad_image) {
    options.initializer =
        reinterpret_cast<void (*)()>(const_cast<void*>(code_address(w.initializer)));
  }
  worker_config config{
      static_cast<std::byte*>(base), geometry, w.doorbell_fd, &options, -1, w.output_fd};
  serve(config, w.cmd_fd, w.report_fd, bad_image);
}

}  // namespace
}  // namespace coproc::detail
