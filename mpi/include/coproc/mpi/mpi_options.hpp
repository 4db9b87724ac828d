#pragma once
/// Configuration of a coproc::mpi_pool, set with designated initialisers.

#include <cstddef>

namespace coproc {

/// Options of an mpi_pool: `mpi_pool pool(ex, {}, {.workers_per_rank = 8});`
struct mpi_options {
  /// Worker processes each worker rank forks for its own pool (every task
  /// runs in one of them, never in the rank). 0: the CPUs of the rank's
  /// affinity mask (its cpuset), so one rank per host uses the whole host.
  std::size_t workers_per_rank = 0;
  /// Tasks sent to one rank at a time, running or waiting there (at least 1).
  /// 0: twice the rank's workers, so each worker's next task is already there
  /// when its current one ends. Rank 0 sends to the rank with the most free
  /// slots first.
  std::size_t tasks_per_rank = 0;
};

}  // namespace coproc
