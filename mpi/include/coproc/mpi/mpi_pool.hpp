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
/// Options: the constructor takes process_pool's coproc::pool_options, so a
/// program switches executors by changing the type it constructs. Applied:
/// queue_capacity (a full queue on rank 0 defers further submits: they count
/// as stats().tasks_waiting), task_timeout (measured from when the task
/// becomes the oldest on its rank, i.e. starts running there), initializer
/// (run on every worker rank when the pool opens; it must be a plain function
/// pointer, `+[] {...}` for a captureless lambda, because a closure cannot
/// travel to another exec), max_payload (arguments and results). Not
/// applicable to ranks, ignored: workers (the job's size decides: mpirun -np),
/// start_method (mpirun starts the ranks), max_tasks_per_worker and
/// max_worker_rss (both recycle a worker, and a rank cannot be replaced: Open
/// MPI 4.1 has no way to respawn a rank into MPI_COMM_WORLD), limits and
/// ring_bytes (a rank outlives the pool and serves later pools; there are no
/// rings, MPI messages carry the tasks).
///
/// The members (submit, async_submit, submit_for, map, map_unordered,
/// async_shutdown, stats, size) are basic_pool's, documented there. What is
/// particular to ranks:
/// - errors: errc::payload_too_large above 2 GiB (MPI's count limit),
///   errc::function_mismatch for code outside the main executable,
///   errc::worker_crashed for an MPI error towards the rank, errc::task_timeout
///   when pool_options::task_timeout passed (the rank finishes the task, its
///   result is discarded, and the rank's next task waits for it);
/// - cancellation (and submit_for's deadline): a task not yet sent to a rank
///   is dropped; a task already sent keeps running on its rank (a rank cannot
///   be killed and replaced) and its result is discarded. Either way the
///   handler gets asio::error::operation_aborted at once;
/// - async_shutdown(cancel) fails queued and sent tasks with
///   errc::pool_stopped (ranks finish what they run, the results are
///   discarded); the worker ranks stay up for a later pool until rank 0 exits;
/// - map_unordered submits its first window at the first next(), and a window
///   of 0 means twice the rank count;
/// - stats(): worker_pids are the ranks' pids on their own hosts;
///   workers_alive is the number of worker ranks; respawns stays 0. size() is
///   the number of worker ranks (MPI_COMM_WORLD size - 1).
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
  /// not a function of the main executable, errc::worker_crashed when the
  /// initializer threw on a rank (naming the rank and the message),
  /// errc::pool_stopped when the job has a single rank or another mpi_pool
  /// is open.
  explicit mpi_pool(const executor_type& ex, pool_options options = {}, mpi_options mpi = {})
      : basic_pool(ex, options, mpi) {}
  /// The same on `ctx`'s executor.
  explicit mpi_pool(asio::io_context& ctx, pool_options options = {}, mpi_options mpi = {})
      : mpi_pool(detail::context_executor(ctx), std::move(options), std::move(mpi)) {}
  /// Closes the session: pending operations complete with
  /// asio::error::operation_aborted; tasks running on ranks finish there and
  /// their results are discarded.
  ~mpi_pool() = default;
};

}  // namespace coproc
