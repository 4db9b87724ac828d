#pragma once
/// Configuration of a coproc::process_pool, set with designated initialisers.

#include <chrono>
#include <cstddef>
#include <functional>
#include <thread>

namespace coproc {

/// How workers are started. Only fork_server exists today: workers are forked
/// from a zygote process that was forked when the pool was created.
enum class start_method { fork_server };

/// Resource limits (setrlimit) applied inside each worker.
struct worker_limits {
  /// RLIMIT_AS, bytes. The pool's shared mapping (2 x (ring_bytes + max_payload)
  /// per worker, for every worker) counts towards it.
  std::size_t address_space = 0;
  std::size_t cpu_seconds = 0;  ///< RLIMIT_CPU: SIGXCPU past it, SIGKILL at +1 s
  std::size_t open_files = 0;   ///< RLIMIT_NOFILE
};

/// Options of a process_pool: `process_pool pool(ex, {.workers = 4});`
struct pool_options {
  /// Worker processes kept alive (default: the hardware concurrency).
  std::size_t workers = std::thread::hardware_concurrency();
  /// Recycle a worker after this many tasks (0: never).
  std::size_t max_tasks_per_worker = 0;
  /// Recycle a worker whose resident set passed this many bytes after a task (0: never).
  std::size_t max_worker_rss = 0;
  /// Runs once in each new worker before its first task. An exception or a
  /// crash in it counts as a worker crash.
  std::function<void()> initializer = {};
  /// Fail a task that runs longer with errc::task_timeout and replace its
  /// worker (zero: no limit).
  std::chrono::milliseconds task_timeout{0};
  /// Tasks accepted but not yet running; further submits suspend until room frees.
  std::size_t queue_capacity = 4096;
  /// Bytes of each worker's task and result rings (a power of two).
  std::size_t ring_bytes = std::size_t{1} << 20;
  /// Largest payload (arguments or result) one task may carry. Payloads above
  /// the inline limit travel through a per-worker shared-memory arena of this size.
  std::size_t max_payload = std::size_t{512} << 20;
  /// How workers are started.
  coproc::start_method start_method = start_method::fork_server;
  /// Resource limits set in each worker before its first task (0: inherit).
  /// A worker that passes one dies or fails its allocation; the task then
  /// fails with errc::worker_crashed (or the task's own std::bad_alloc).
  worker_limits limits = {};
};

}  // namespace coproc
