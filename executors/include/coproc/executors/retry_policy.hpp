#pragma once
/// coproc::retry_policy: how often one call's task is run again after its
/// worker crashed.

#include <cstddef>

namespace coproc {

/// Per-call retries, passed first: `co_await pool.submit(coproc::retry_policy{.retries = 3},
/// fn, args...)`. It replaces pool_options::retries and pool_options::retry_timeouts
/// for that call only.
///
/// A retry runs the task again from its start, in another worker process,
/// with the same arguments: only for a task that is idempotent (running it
/// twice, or half a run followed by a whole one, does no harm). The pool cannot
/// know that, so retries are off unless the caller opts in here or in
/// pool_options.
///
/// What is retried: a worker that died while it ran the task (a signal, an
/// exit of its own, an rlimit, the OOM killer). Never: the task's own
/// exception, a cancellation, a shutdown, a pool that broke, a streaming
/// task (pool.stream: its reader saw the values of the attempt that crashed).
/// A task that ran past pool_options::task_timeout only with `on_timeout`.
/// When every attempt failed, the error is the last attempt's (a
/// coproc::worker_crashed_error, or errc::task_timeout) and its message lists
/// every attempt's reason.
struct retry_policy {
  /// Attempts after the first (0: the task fails with its first crash).
  std::size_t retries = 0;
  /// Whether a task that ran past task_timeout (its worker killed) is retried too.
  bool on_timeout = false;
};

}  // namespace coproc
