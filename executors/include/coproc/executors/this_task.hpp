#pragma once
/// What a task running in a pool's worker may ask about itself: whether its
/// caller asked it to stop (cooperative cancellation before the kill).

#include "coproc/executors/detail/task_stop.hpp"

namespace coproc {

class task_stop_token;

namespace this_task {
inline task_stop_token get_stop_token() noexcept;
}

/// A running task's stop request, for loops (as std::stop_token):
///
///     for (auto st = coproc::this_task::get_stop_token(); !st.stop_requested();) {
///       step();
///     }
///
/// Small and copyable; it names the task it was taken in, so a copy kept
/// past that task never reports a later task's request. Thread safety: any
/// thread of the worker process may call it (the task's own threads too).
class task_stop_token {
 public:
  /// A token that is never stopped (as a default-constructed std::stop_token).
  task_stop_token() noexcept = default;

  /// True once the task's caller cancelled it or its deadline passed, with
  /// pool_options::stop_grace > 0; never with a grace of 0 (the worker is
  /// killed at once then).
  bool stop_requested() const noexcept { return view_.stop_requested(); }
  /// Whether a stop can ever be requested: the token was taken in a task.
  bool stop_possible() const noexcept { return view_.word != nullptr && view_.id != 0; }

 private:
  friend task_stop_token this_task::get_stop_token() noexcept;
  explicit task_stop_token(detail::task_stop_view v) noexcept : view_(v) {}
  detail::task_stop_view view_;
};

namespace this_task {

/// Whether the running task was asked to stop: its caller cancelled it
/// (a bound cancellation slot, `submit(...) || timer`, submit_for's
/// deadline) or its task_timeout passed, and the pool's stop_grace is not
/// zero. The pool then waits up to stop_grace for the task to return before
/// it kills the worker; a task that returns in time keeps its worker (see
/// task_stopped_error for what its caller gets). False outside a task (in
/// the parent, say). A few relaxed loads and a compare: cheap enough for an
/// inner loop. Thread safety: any thread of the worker process.
inline bool stop_requested() noexcept {
  return detail::task_stop_requested();
}

/// A token for the running task (see task_stop_token).
inline task_stop_token get_stop_token() noexcept {
  return task_stop_token(detail::running_task.view());
}

}  // namespace this_task
}  // namespace coproc
