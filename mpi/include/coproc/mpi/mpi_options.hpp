#pragma once
/// Configuration of a coproc::mpi_pool, set with designated initialisers.

#include <cstddef>

namespace coproc {

/// Options of an mpi_pool: `mpi_pool pool(ex, {.tasks_per_rank = 2});`
struct mpi_options {
  /// Tasks sent ahead to one worker rank (at least 1). With 2, a rank receives
  /// its next task while it still runs the current one, which hides the
  /// message latency; a task already sent can no longer be dropped by
  /// cancellation (its result is discarded instead).
  std::size_t tasks_per_rank = 2;
};

}  // namespace coproc
