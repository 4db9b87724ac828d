// start_method::spawn: the zygote as a fresh exec of /proc/self/exe.
//
// The parent posix_spawns /proc/self/exe (the very inode it runs) with the
// zygote's fds inherited and COPROC_ZYGOTE=<fd> in the environment. In the new
// image, spawn_entry (a constructor of this translation unit, linked into any
// program using process_pool because zygote.cpp's fork_zygote calls
// spawn_zygote) reads the configuration from that fd, runs the program's
// remaining static initializers, checks that its code is the parent's
// (detail/code_identity.hpp), maps the pool's memfd and becomes the same
// zygote as a forked one (serve, zygote.cpp).

#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "coproc/executors/detail/code_identity.hpp"
#include "coproc/executors/detail/zygote.hpp"
#include "coproc/runtime/detail/child_setup.hpp"
#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "zygote_start.hpp"

extern "C" char** environ;

namespace coproc::detail {
namespace {

static_assert(sizeof(spawn_wire) <= PIPE_BUF, "written whole before the zygote exists");

// True while a spawned zygote runs the program's static initializers: a
// spawn pool created there would exec yet another zygote, and so on.
bool bootstrapping = false;

/// The initializer as a code offset, or a readable refusal.
std::int64_t initializer_offset(const std::function<void()>& init) {
  auto* const* fn = init.target<void (*)()>();
  if (fn == nullptr || *fn == nullptr) {
    throw std::invalid_argument(
        "coproc::process_pool: with start_method::spawn, pool_options::initializer must be "
        "empty or hold a plain function pointer void(*)() (a function, or a captureless "
        "lambda converted with unary +): the worker runs in a separately exec'd image, where "
        "only code can be named, not a function object's state");
  }
  if (!in_main_program(reinterpret_cast<const void*>(*fn))) {
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

}  // namespace

pid_t spawn_zygote(const worker_config& config, int cmd_read, int report_write) {
  if (bootstrapping) {
    throw std::logic_error(
        "coproc::process_pool: a start_method::spawn pool cannot be created by a static "
        "initializer of a spawned zygote (it would exec zygotes without end): create pools "
        "in main()");
  }
  const pool_options& o = *config.options;
  const program_image& image = own_image();
  if (!in_main_program(reinterpret_cast<const void*>(&image_anchor))) {
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
    w.initializer = initializer_offset(o.initializer);
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
  if (!write_full(wire_write.get(), &w, sizeof w)) {
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

using init_fn = void (*)(int, char**, char**);

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
      !read_full(static_cast<int>(wire_fd), &w, sizeof w) || w.magic != spawn_wire_magic) {
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
  reset_signals(child_role::pool);
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
  const program_image& own = own_image();
  bool bad_image = !own.anchor_in_exe || !own.code_complete || !same_image(w.image, own.id);
  // Workers jump only into the main program's code (checked_code_address).
  allowed_code() = own.code;
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
