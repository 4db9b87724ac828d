#pragma once
// The zygote (fork server) and the worker loop it forks.
//
// The zygote is forked when a pool is created, before the pool owns any ring
// or thread, and stays single-threaded: every worker is forked from it, so a
// respawn is safe however many threads the host runs by then. It talks to the
// parent over two pipes (commands in, reports out) and reaps its workers,
// reporting each exit status with the worker's peak RSS.
//
// With start_method::spawn the zygote is forked and exec'd from /proc/self/exe;
// a constructor in zygote.cpp takes control of the new image before main, reads
// a serialized configuration from the fd named by COPROC_ZYGOTE, maps the memfd
// anew, checks that its image is the parent's (detail/code_identity.hpp) and
// then serves exactly like a forked zygote.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "coproc/executors/detail/code_identity.hpp"
#include "coproc/executors/detail/pool_layout.hpp"
#include "coproc/executors/pool_options.hpp"

namespace coproc::detail {

enum zygote_command_kind : std::uint32_t { zygote_spawn = 1, zygote_stop = 2 };

struct zygote_command {
  std::uint32_t kind;
  std::uint32_t slot;
};

enum zygote_report_kind : std::uint32_t {
  report_spawned = 1,      // pid: the new worker of `slot`
  report_exited = 2,       // wait_status, max_rss_kb: a worker of `slot` left
  report_spawn_failed = 3  // error: fork's errno
};

struct zygote_report {
  std::uint32_t kind;
  std::uint32_t slot;
  std::int32_t pid;
  std::int32_t wait_status;
  std::int64_t max_rss_kb;
  std::int32_t error;
  std::int32_t reserved;
};

/// Exit statuses a worker uses for its own reasons (a crash is anything else).
enum worker_exit_code : int {
  worker_exit_retired = 0,          // max_tasks_per_worker or max_worker_rss reached
  worker_exit_orphaned = 120,       // the pool's process is gone
  worker_exit_bad_image = 121,      // the worker's code differs from the parent's
  worker_exit_init_failed = 122,    // the initializer threw
  worker_exit_corrupt_frame = 123,  // a ring held words no parent wrote
  worker_exit_lost_parent = 124,    // its doorbell fd is gone (a task closed it)
};

/// What the zygote and its workers need; lives in the pool object, which a
/// forked zygote's memory holds a copy of (an exec'd zygote rebuilds it, with
/// `options` pointing to its own copy of the fields workers read).
struct worker_config {
  std::byte* base = nullptr;  // the shared mapping
  pool_geometry geometry{};
  int doorbell_fd = -1;  // eventfd the parent waits on
  const pool_options* options = nullptr;
  int memfd = -1;      // the shared mapping's memfd (an exec'd zygote maps it anew)
  int output_fd = -1;  // pool_options::worker_output's socket; -1: inherit
};

/// start_method::spawn: the environment variable naming the configuration
/// pipe's fd in the exec'd zygote (removed from its environment at once).
inline constexpr const char* spawn_marker = "COPROC_ZYGOTE";
inline constexpr std::uint64_t spawn_wire_magic = 0x31'6e'77'61'70'73'63'70ULL;  // "pcspawn1"

/// Everything an exec'd zygote needs, trivially copyable, written whole into
/// a pipe before the zygote exists (it fits PIPE_BUF).
struct spawn_wire {
  std::uint64_t magic;  // spawn_wire_magic
  std::int32_t parent;  // the pool's process: the zygote dies with it
  std::int32_t cmd_fd;
  std::int32_t report_fd;
  std::int32_t doorbell_fd;
  std::int32_t memfd;
  std::int32_t output_fd;  // -1: workers keep the inherited stdio
  std::uint32_t has_initializer;
  std::int64_t initializer;  // code offset of the void(*)() initializer
  std::uint64_t slots;
  std::uint64_t ring_bytes;
  std::uint64_t arena_bytes;
  std::uint64_t max_tasks_per_worker;
  std::uint64_t max_worker_rss;
  std::int64_t task_timeout_ms;
  std::uint64_t limit_address_space;
  std::uint64_t limit_cpu_seconds;
  std::uint64_t limit_open_files;
  std::uint32_t idle_priority;
  image_id image;  // the parent's (detail/code_identity.hpp)
};
static_assert(std::is_trivially_copyable_v<spawn_wire>);

/// Starts the zygote as `config.options->start_method` says (fork, or fork
/// and exec). In the parent, returns its pid; a forked child never returns.
/// `cmd_read` and `report_write` are the zygote's pipe ends.
/// Throws std::system_error naming the failing call (fork, pipe2, execve), and
/// for spawn std::invalid_argument when the initializer or the link cannot
/// cross an exec.
pid_t fork_zygote(const worker_config& config, int cmd_read, int report_write);

/// Runs tasks of `slot` until the process is killed or retires.
[[noreturn]] void worker_main(const worker_config& config, std::size_t slot);

}  // namespace coproc::detail
