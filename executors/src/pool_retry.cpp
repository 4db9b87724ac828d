// The retry side of pool_core: whether a task whose worker died under it
// runs again (pool_options::retries, coproc::retry_policy), and the error of
// one whose every attempt failed (see docs/ARCHITECTURE.md, "Lifecycle,
// broken pools and restarts").

#include <memory>
#include <string>

#include "coproc/runtime/worker_crashed_error.hpp"
#include "pool_core.hpp"

namespace coproc::detail {

// A death the task may have caused and that a new worker may not repeat: a
// signal or an exit of the worker's own. Not a ring found overwritten (that
// fails as frame_corrupt), nor a worker image that differs from the
// parent's (every worker would).
bool pool_core::retryable(const exit_status& status) {
  return death_errc(status) == coproc::errc::worker_crashed &&
         !(status.exited && status.code == worker_exit_bad_image);
}

// Records the failed attempt of a task that may be retried, and says whether
// it runs again (then it is ready for the queue). A task whose policy allows
// no retry is not recorded, so its error stays exactly what it always was.
// The budget counts attempts, not deaths: a task that crashes every worker
// it meets stops after retries + 1 of them.
bool pool_core::retry_after(task_op& op, const exit_status& status, const std::string& why,
                            attempt_end end) {
  retry_policy policy = op.retry.value_or(retry_policy{options_.retries, options_.retry_timeouts});
  if (policy.retries == 0) {
    return false;
  }
  if (!op.attempts) {
    op.attempts = std::make_unique<task_attempts>();
  }
  task_attempts& a = *op.attempts;
  a.statuses.push_back(status);
  a.reasons += (a.statuses.size() > 1 ? "; attempt " : "attempt ") +
               std::to_string(a.statuses.size()) + ": " + why;
  bool allowed = end == attempt_end::crash || (end == attempt_end::timeout && policy.on_timeout);
  if (!allowed || a.statuses.size() > policy.retries || !replaces_workers(state_, true)) {
    return false;
  }
  op.unsend();
  ++ledger_.stats().tasks_retried;
  return true;
}

// `why` when the task ran once, else every attempt's reason.
std::string pool_core::attempts_text(const task_op& op, const std::string& why) {
  if (!op.attempts || op.attempts->statuses.size() < 2) {
    return why;
  }
  return "task failed after " + std::to_string(op.attempts->statuses.size()) +
         " attempts: " + op.attempts->reasons;
}

// What a task fails with when its worker died under it and it is not run
// again: its worker's exit status as data, every attempt's when it was retried.
std::exception_ptr pool_core::crash_error(const task_op& op, const exit_status& status,
                                          const std::string& why) {
  if (death_errc(status) != coproc::errc::worker_crashed) {
    // A worker that found its ring overwritten.
    return error(death_errc(status), attempts_text(op, why));
  }
  if (!op.attempts || op.attempts->statuses.size() < 2) {
    return std::make_exception_ptr(worker_crashed_error(status, why));
  }
  return std::make_exception_ptr(
      worker_crashed_error(op.attempts->statuses, attempts_text(op, why)));
}

}  // namespace coproc::detail
