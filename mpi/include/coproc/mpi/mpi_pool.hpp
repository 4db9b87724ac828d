#pragma once
/// coproc::mpi_pool: the process_pool interface over the ranks of an MPI job.
///
/// Rank 0 runs the program's event loop and submits; every other rank runs
/// the worker loop of the same binary. Tasks name their code by its offset
/// from detail::image_anchor, checked at start-up against the GNU build id of
/// each rank's executable, so separate execs (ASLR) of one build agree.

#include <asio/any_io_executor.hpp>
#include <asio/io_context.hpp>
#include <utility>

#include "coproc/executors/basic_pool.hpp"
#include "coproc/executors/pool_options.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/mpi/detail/mpi_backend.hpp"
#include "coproc/mpi/mpi_options.hpp"
#include "coproc/runtime/detail/context_executor.hpp"

namespace coproc {

/// The process_pool interface (submit, async_submit, map, map_unordered,
/// async_shutdown, stats) over the ranks of an MPI job: rank 0 submits, ranks
/// 1..N-1 run the tasks. See docs/SCALE_OUT.md.
///
/// Start-up. MPI is initialised by run_workers_if_not_root(argc, argv) or, if
/// the program did not call it, by the first mpi_pool constructor. On every
/// rank but 0 that call never returns: the rank serves tasks until rank 0
/// exits, then finalises MPI and leaves with std::exit(0). Everything the
/// program did before it ran on every rank, so call it first thing in main().
/// All MPI calls of rank 0 are made by one progress thread (MPI_THREAD_FUNNELED
/// is enough); MPI is finalised when rank 0 exits (std::atexit).
///
/// One mpi_pool may be open at a time (the worker ranks serve one session);
/// pools may follow one another.
///
/// Callables: as for process_pool, but a function pointer must point into
/// the main executable (not a shared library): its offset is what travels.
/// A declared task object travels through the codec (its members are values).
///
/// Where tasks run: each worker rank forks its own pool of worker processes
/// (mpi_options::workers_per_rank, default the rank's CPUs) and runs every
/// task in one of them, never in the rank: a task that crashes, runs past its
/// deadline or is cancelled costs that worker (killed and replaced on its
/// rank), as in a process_pool; the rank and the job go on. Only the death of
/// a rank process itself (its host lost) ends the MPI job (Open MPI 4.1).
///
/// Options: the constructor takes process_pool's coproc::pool_options, so a
/// program switches executors by changing the type it constructs. On rank 0:
/// queue_capacity (a full queue defers further submits: they count as
/// stats().tasks_waiting) and max_payload (arguments; results are checked on
/// the rank). On every worker rank's pool: task_timeout, stop_grace, max_tasks_per_worker,
/// max_worker_rss, limits, start_method, idle_priority, ring_bytes, arena_keep,
/// start_timeout, max_restarts, restart_period, retries, retry_timeouts and
/// initializer (run in every worker; it must be a plain function pointer,
/// `+[] {...}` for a captureless lambda, because a closure cannot travel to
/// another exec). Ignored: workers (mpi_options::workers_per_rank decides)
/// and worker_output (the workers' output goes where the rank's goes, as
/// mpirun forwards it).
///
/// The members (submit, async_submit, submit_for, map, map_unordered,
/// async_shutdown, stats, size) are basic_pool's, documented there. What is
/// particular to ranks:
/// - errors: errc::payload_too_large above 2 GiB (MPI's count limit),
///   errc::function_mismatch for code outside the main executable,
///   coproc::worker_crashed_error whose rank() names the rank, and
///   errc::worker_crashed for an MPI error towards a rank;
/// - retries (pool_options::retries, or a call's coproc::retry_policy, which
///   travels with its task) happen on the task's rank, in its own pool: a task
///   is not moved to another rank. A task that crashed on every attempt fails
///   with a worker_crashed_error whose message lists every attempt, but whose
///   attempts() holds only the last one's status (what crosses back);
/// - cancellation (and submit_for's deadline): the handler gets
///   asio::error::operation_aborted at once; a task not yet sent is dropped,
///   a task on a rank is dropped there or, running, its worker is killed
///   (with a stop_grace, the rank's pool asks the task to stop first and
///   keeps a worker whose task returns in time; what the task returned
///   stays on the rank: rank 0's handlers get no task_stopped_error, only
///   its code, operation_aborted or the rank's task_timeout);
/// - async_shutdown(cancel) fails queued and sent tasks with
///   errc::pool_stopped; the worker ranks stay up for a later pool until
///   rank 0 exits;
/// - map_unordered submits its first window at the first next(), and a window
///   of 0 means twice size();
/// - stats(): totals over the ranks, and `ranks` with each rank's figures
///   (its pid, workers alive and busy, crashes, respawns, worker pids on its
///   host). size() is the number of workers over all worker ranks.
///
/// Thread safety: every member function may be called from any thread.
/// The pool must outlive the operations it started; destroying it completes
/// them with asio::error::operation_aborted.
class mpi_pool : public basic_pool<detail::mpi_backend> {
 public:
  /// Initialises MPI (if not yet done). On rank 0 returns; on the other
  /// ranks runs the worker loop and leaves the process with std::exit(0)
  /// once rank 0 finishes (or with a non-zero status on a fatal MPI error).
  /// Throws std::system_error if MPI cannot be initialised.
  static void run_workers_if_not_root(int& argc, char**& argv);
  /// This process's rank in MPI_COMM_WORLD (initialises MPI if needed; a
  /// worker rank never returns from that initialisation).
  static int rank();

  /// Opens a session with every worker rank: sends the build id and waits
  /// for each rank to confirm it runs the same build.
  /// `options` as for process_pool (see the class comment for what applies
  /// to ranks); `mpi` holds what only MPI has.
  /// Throws std::system_error: errc::function_mismatch when a rank runs
  /// another build (that rank then refuses every task) or the initializer is
  /// not a function of the main executable, errc::worker_crashed when a rank
  /// could not start its pool (naming the rank and why), errc::pool_stopped
  /// when the job has a single rank or another mpi_pool is open.
  explicit mpi_pool(const executor_type& ex, pool_options options = {}, mpi_options mpi = {})
      : basic_pool(ex, options, mpi) {}
  /// The same on `ctx`'s executor.
  explicit mpi_pool(asio::io_context& ctx, pool_options options = {}, mpi_options mpi = {})
      : mpi_pool(detail::context_executor(ctx), std::move(options), std::move(mpi)) {}
  /// Closes the session: pending operations complete with
  /// asio::error::operation_aborted; each rank stops its pool (workers
  /// killed).
  ~mpi_pool() = default;
};

}  // namespace coproc
