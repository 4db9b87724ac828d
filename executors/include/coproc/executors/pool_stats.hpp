#pragma once
/// A snapshot of a process_pool's counters.

#include <sys/types.h>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace coproc {

/// One MPI rank's share of an mpi_pool (pool_stats::ranks).
struct rank_stats {
  int rank = 0;                      ///< the rank in MPI_COMM_WORLD
  pid_t pid = 0;                     ///< the rank's own process, on its host
  std::size_t workers_alive = 0;     ///< the rank's worker processes running now
  std::size_t workers_busy = 0;      ///< of them, those running a task (at most)
  std::size_t tasks_held = 0;        ///< tasks sent to the rank, reply not yet back
  std::uint64_t worker_crashes = 0;  ///< its workers that died unexpectedly
  std::uint64_t respawns = 0;        ///< its workers forked to replace another
  std::uint64_t tasks_retried = 0;   ///< its tasks run again after a crash
  std::vector<pid_t> worker_pids;    ///< pids of its live workers, on its host
};

/// Counters of a process_pool, as returned by process_pool::stats().
struct pool_stats {
  std::size_t workers_alive = 0;      ///< worker processes running now
  std::size_t workers_busy = 0;       ///< workers with at least one task in flight
  std::size_t tasks_queued = 0;       ///< accepted, not yet handed to a worker
  std::size_t tasks_waiting = 0;      ///< submits suspended by a full queue
  std::uint64_t tasks_completed = 0;  ///< finished with a value
  std::uint64_t tasks_failed = 0;     ///< finished with an exception or an error
  std::uint64_t tasks_cancelled = 0;  ///< dropped or killed through cancellation
  std::uint64_t tasks_retried = 0;    ///< attempts started again after a crash (retries)
  std::uint64_t worker_crashes = 0;   ///< workers that died unexpectedly
  std::uint64_t respawns = 0;         ///< workers forked to replace another
  std::vector<pid_t> worker_pids;     ///< pids of the live workers (of every rank)
  /// mpi_pool only: the same figures per worker rank (empty for a process_pool).
  std::vector<rank_stats> ranks;
};

}  // namespace coproc
