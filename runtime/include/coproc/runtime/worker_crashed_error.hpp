#pragma once
/// coproc::worker_crashed_error: the exception a task fails with when the worker
/// running it died.

#include <string>
#include <system_error>

#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/exit_status.hpp"

namespace coproc {

/// A std::system_error with code errc::worker_crashed that also carries how the
/// worker ended: `status()` holds the signal (or exit status), whether it dumped
/// core, and its peak memory (max_rss_kb). Code that catches std::system_error
/// and compares the code keeps working; catch this type for the data:
///
///     try { co_await pool.submit(f); }
///     catch (const coproc::worker_crashed_error& e) { e.status().signal; e.status().max_rss_kb; }
///
/// A pool-wide failure that is not one worker's death (a failed initializer, an
/// image mismatch) stays a plain std::system_error with errc::worker_crashed.
class worker_crashed_error : public std::system_error {
 public:
  /// `rank`: the MPI rank whose worker died (mpi_pool), -1 for this host's pool.
  worker_crashed_error(const exit_status& status, const std::string& what, int rank = -1)
      : std::system_error(make_error_code(errc::worker_crashed), what),
        status_(status),
        rank_(rank) {}

  /// How the worker ended (signal or exit status, core dump, max RSS in KiB).
  const exit_status& status() const noexcept { return status_; }
  /// The MPI rank the worker ran on (an mpi_pool's task); -1 for a
  /// process_pool's own worker.
  int rank() const noexcept { return rank_; }

 private:
  exit_status status_;
  int rank_;
};

}  // namespace coproc
