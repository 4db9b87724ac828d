#pragma once
/// coproc::worker_crashed_error: the exception a task fails with when the worker
/// running it died.

#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

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
///
/// A task retried after crashes (pool_options::retries, coproc::retry_policy)
/// that crashed on every attempt fails with this error too: status() is the
/// last attempt's, attempts() holds every attempt's in order, and what() lists
/// each attempt's reason. Copies share the attempts (exceptions are copied).
class worker_crashed_error : public std::system_error {
 public:
  /// `rank`: the MPI rank whose worker died (mpi_pool), -1 for this host's pool.
  worker_crashed_error(const exit_status& status, const std::string& what, int rank = -1)
      : worker_crashed_error(std::vector<exit_status>{status}, what, rank) {}

  /// A task that crashed on every attempt: how each attempt's worker ended,
  /// first to last (an empty vector counts as one attempt of unknown end).
  worker_crashed_error(std::vector<exit_status> attempts, const std::string& what, int rank = -1)
      : std::system_error(make_error_code(errc::worker_crashed), what),
        attempts_(std::make_shared<const std::vector<exit_status>>(
            attempts.empty() ? std::vector<exit_status>(1) : std::move(attempts))),
        rank_(rank) {}

  /// How the worker ended (signal or exit status, core dump, max RSS in KiB);
  /// for a retried task, how its last attempt's worker ended.
  const exit_status& status() const noexcept { return attempts_->back(); }
  /// How each attempt's worker ended, first to last (one entry when the task
  /// was not retried). An attempt that ran past task_timeout (retried with
  /// retry_timeouts) shows the SIGKILL the pool sent.
  const std::vector<exit_status>& attempts() const noexcept { return *attempts_; }
  /// The MPI rank the worker ran on (an mpi_pool's task); -1 for a
  /// process_pool's own worker.
  int rank() const noexcept { return rank_; }

 private:
  std::shared_ptr<const std::vector<exit_status>> attempts_;
  int rank_;
};

}  // namespace coproc
