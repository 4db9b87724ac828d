#pragma once
/// Configuration of a coproc::process_pool, set with designated initialisers.

#include <chrono>
#include <cstddef>
#include <functional>
#include <string_view>

#include "coproc/runtime/detail/usable_cpus.hpp"

namespace coproc {

/// How workers are started. In both methods workers are forked from a zygote
/// (a single-threaded fork server) that the pool starts in its constructor;
/// the methods differ in how that zygote comes to be.
enum class start_method {
  /// The zygote is forked from the pool's constructor and inherits the
  /// process as it is then: the fastest start, and any callable or initializer
  /// works. Create the pool early in main(), before the host runs threads: a
  /// fork copies only the calling thread, and a lock another thread held stays
  /// held in the zygote. A zygote that dies (killed) is replaced by a fork of
  /// the host as it is then, threads and all: prefer spawn for a host that
  /// runs threads and must survive that.
  fork_server,
  /// The zygote is forked and at once exec'd from /proc/self/exe (the same
  /// binary), for hosts that already run many threads or hold much memory:
  /// it starts as a fresh image, runs the program's static initializers (not
  /// main), checks its GNU build id and code layout against the parent's, and
  /// maps the pool's memfd. Tasks are named by code offsets as ever, so user
  /// code does not change. Requirements: coproc linked into the executable
  /// (its static libraries) and the program run directly (not as
  /// `ld.so PROGRAM`), task functions in the executable, and an
  /// `initializer` that is empty or holds a plain `void(*)()` (a captureless
  /// lambda converted with unary +); otherwise the pool's constructor throws
  /// std::invalid_argument. A zygote whose image differs from the parent's
  /// makes every worker leave at once, which fails the pool's tasks with
  /// errc::worker_crashed. Costs a few milliseconds more per pool start;
  /// tasks run as fast as with fork_server.
  spawn,
};

/// Where what a worker writes to its stdout and stderr goes.
enum class worker_output {
  /// The host's own stdout and stderr as they were when the pool was created
  /// (the zygote and every worker inherit them): lines of several workers
  /// interleave as written, with nothing telling them apart.
  inherit,
  /// Each line a worker writes is written by the host to its own stdout (or
  /// stderr, for the worker's stderr) as "[worker PID] line": whole lines,
  /// never interleaved within a line. Costs one relay thread in the host.
  prefix_pid,
  /// Each line goes to pool_options::on_worker_output, run on the pool's
  /// executor (posted, as a completion is). Costs one relay thread too.
  callback,
};

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
  /// Worker processes kept alive (default: the CPUs this process may run on,
  /// its affinity mask, so a container's cpuset); 0 is refused with
  /// std::invalid_argument.
  std::size_t workers = detail::usable_cpus();
  /// Recycle a worker after this many tasks (0: never).
  std::size_t max_tasks_per_worker = 0;
  /// Recycle a worker whose resident set passed this many bytes after a task (0: never).
  std::size_t max_worker_rss = 0;
  /// Runs once in each new worker before its first task. If it throws, or its
  /// worker dies before it returned (a crash, a kill), the pool is broken:
  /// pending and later tasks fail with errc::pool_broken, whose message names
  /// the initializer and its exception or signal (Python's BrokenProcessPool).
  std::function<void()> initializer = {};
  /// Fail a task that runs longer with errc::task_timeout and replace its
  /// worker (zero: no limit).
  std::chrono::milliseconds task_timeout{0};
  /// How long a running task that was cancelled or ran past task_timeout (or
  /// submit_for's deadline) may take to stop before its worker is killed.
  /// Zero (the default): the worker is killed at once, as always. Otherwise
  /// the pool first asks the task to stop (coproc::this_task::stop_requested()
  /// turns true in it) and kills its worker only if it has not returned after
  /// this long. A task that returns in time keeps its worker (no respawn);
  /// either way its caller gets coproc::task_stopped_error, whose code() is
  /// the one it gets without a grace (operation_aborted or errc::task_timeout)
  /// and which carries the task's value or exception if it returned in time.
  /// A task that never looks at stop_requested() only finishes later: it
  /// runs on for the grace, then is killed.
  std::chrono::milliseconds stop_grace{0};
  /// Runs a task again, in another worker, when the worker running it died (a
  /// signal, an exit of its own, an rlimit, the OOM killer), up to this many
  /// times; if every attempt fails, the task fails with the last attempt's
  /// coproc::worker_crashed_error, whose message lists every attempt's reason.
  /// 0: a crash fails the task at once. Opt in only for idempotent tasks: a
  /// retried task starts over, and what its crashed attempt did before it died
  /// (a file written, a request sent) stays done. Never retried: the task's own
  /// exception, a cancellation, a shutdown, a broken pool, a streaming task.
  /// A call can set its own with coproc::retry_policy. stats().tasks_retried
  /// counts the retries.
  std::size_t retries = 0;
  /// Whether a task that ran past task_timeout (its worker killed) is retried
  /// within `retries` too; if its last attempt timed out it fails with
  /// errc::task_timeout, its message listing every attempt. Not with a
  /// stop_grace: a task asked to stop is never retried (it ends with
  /// task_stopped_error, carrying what it did).
  bool retry_timeouts = false;
  /// The bound on waiting for a worker: while tasks wait, a worker that has
  /// not finished starting (fork and initializer) this long after it was asked
  /// for breaks the pool (errc::pool_broken, naming the initializer), and a
  /// zygote that has not reported a fork or a worker's death this long
  /// (stopped, say) is replaced as if it had died. Zero: no bound. task_timeout
  /// bounds running tasks; this bounds everything before.
  std::chrono::milliseconds start_timeout{60'000};
  /// Restart intensity, as Erlang's supervisors have it: more than
  /// `max_restarts` zygote deaths within `restart_period` (each starts a new
  /// zygote and its workers), or more than `max_restarts` workers in a row
  /// that died before they started with no task finished in between (a pool
  /// without an initializer), break the pool with errc::pool_broken. Not
  /// counted: a worker that dies running a task (that fails the task only),
  /// retires, or is killed by the pool. An initializer failure breaks the
  /// pool at once, whatever its timing.
  std::size_t max_restarts = 5;
  std::chrono::milliseconds restart_period{10'000};
  /// Tasks accepted but not yet running; further submits suspend until room frees.
  std::size_t queue_capacity = 4096;
  /// Values a streaming task (basic_pool::stream) may emit ahead of its
  /// reader: past this many unread values, its emitter blocks until the
  /// reader catches up, so a slow reader bounds the memory of both sides.
  /// The reader lets the task go on each time it has read half of them: on
  /// one core, each such turn costs two context switches, so a small buffer
  /// costs throughput there (8-byte values from one task, pinned to one CPU:
  /// 8.5M values/s with 256, 17.5M with 1024, 29M with 4096; bench_emit).
  std::size_t stream_buffer = 4096;
  /// Bytes of each worker's task and result rings (a power of two).
  std::size_t ring_bytes = std::size_t{1} << 20;
  /// Largest payload (arguments or result) one task may carry. Payloads above
  /// the inline limit travel through a per-worker shared-memory arena of this size.
  std::size_t max_payload = std::size_t{512} << 20;
  /// Arena bytes each worker keeps while the pool rests. A payload past it
  /// (arguments or a result) uses more of the worker's two arenas; those
  /// pages go back to the kernel (a hole punched in the pool's memfd) once the
  /// pool is idle, so an idle pool holds at most workers x 2 x (ring_bytes +
  /// arena_keep) of shared memory, whatever it carried before. Tasks in a
  /// burst reuse the pages; the first large payload after a rest faults them
  /// in again.
  std::size_t arena_keep = std::size_t{16} << 20;
  /// How workers are started.
  coproc::start_method start_method = start_method::fork_server;
  /// Resource limits set in each worker before its first task (0: inherit).
  /// A worker that passes one dies or fails its allocation; the task then
  /// fails with errc::worker_crashed (or the task's own std::bad_alloc).
  worker_limits limits = {};
  /// Run workers under SCHED_IDLE: any other runnable thread of the machine,
  /// such as the event loop answering a request, preempts them at once, and
  /// they get only CPU time nothing else wants. For a server whose loop must
  /// stay responsive while every worker computes (examples/http_server). On a
  /// machine kept busy by other work, tasks then make little progress.
  bool idle_priority = false;
  /// Where workers' stdout and stderr go (inherit, prefix_pid or callback).
  /// With prefix_pid or callback, each worker writes into pipes of its own,
  /// which a relay thread of the host reads: a line is passed on once its
  /// newline arrived, or at 64 KiB, or when the worker ends (a last line
  /// without a newline). Output a worker wrote before it died, even by a
  /// kill, is passed on; what sat in its stdio buffer unflushed is not (a
  /// worker flushes after each task and before an orderly exit). A worker
  /// writing faster than the relay passes on waits for it, as with a pipe.
  coproc::worker_output worker_output = worker_output::inherit;
  /// With worker_output::callback: called with the worker's pid, the stream
  /// (1: stdout, 2: stderr) and the line without its newline, on the pool's
  /// executor. Lines of one worker and stream arrive in order. Lines still in
  /// the pipes when the pool is destroyed are passed on first (bounded by
  /// half a second); after the io_context is destroyed, none is.
  std::function<void(int pid, int stream, std::string_view line)> on_worker_output = {};
};

}  // namespace coproc
