#pragma once
/// coproc::task_stopped_error: how a task ends that was asked to stop before
/// its kill (pool_options::stop_grace > 0), carrying what the task did.

#include <exception>
#include <memory>
#include <string>
#include <system_error>
#include <typeinfo>
#include <utility>

namespace coproc {

namespace detail {

/// What a stopped task did: held once, shared by every copy of the error.
struct task_outcome {
  bool finished = false;                 // returned (a value or an exception) within the grace
  std::exception_ptr exception;          // the task's own exception, if it threw
  std::shared_ptr<const void> value;     // its returned value (null for void and when it threw)
  const std::type_info* type = nullptr;  // the type `value` points to
};

}  // namespace detail

/// The error of a task that was cancelled, or ran past its deadline, while it
/// ran in a pool whose stop_grace is not zero: the pool asked it to stop
/// (this_task::stop_requested() turned true) and waited up to stop_grace
/// before it killed the worker. A std::system_error whose code() is what it
/// is without a grace, so code that catches std::system_error and compares
/// codes keeps working: asio::error::operation_aborted when its caller
/// cancelled it, errc::task_timeout for task_timeout and submit_for's
/// deadline. Catch this type for what the task did meanwhile:
///
///     catch (const coproc::task_stopped_error& e) {
///       if (const int* partial = e.value<int>()) use(*partial);  // returned in time
///       else if (e.task_exception()) ...;                        // threw in time
///       else ...;  // !e.finished(): it ignored the request and was killed
///     }
///
/// A task that returned in time kept its worker (no respawn). With
/// stop_grace 0 nothing is asked and this error is never thrown: the worker
/// is killed at once and the task fails with a plain std::system_error.
/// Copies share the outcome (copying the error is cheap).
class task_stopped_error : public std::system_error {
 public:
  task_stopped_error(std::error_code code, const std::string& what,
                     std::shared_ptr<const detail::task_outcome> outcome)
      : std::system_error(code, what), outcome_(std::move(outcome)) {}
  /// The same outcome under another code and message (submit_for reports its
  /// deadline, not the cancellation it made).
  task_stopped_error(std::error_code code, const std::string& what, const task_stopped_error& of)
      : std::system_error(code, what), outcome_(of.outcome_) {}

  /// The task returned, with a value or an exception, within the grace; false
  /// when its worker was killed (or died) first.
  bool finished() const noexcept { return outcome_ && outcome_->finished; }
  /// The task's own exception (as remote_error, as submit would throw it) if
  /// it threw within the grace, else null.
  std::exception_ptr task_exception() const noexcept {
    return outcome_ ? outcome_->exception : nullptr;
  }
  /// The value the task returned within the grace, if it returned one of type
  /// R (the task's result type); null otherwise (and for void tasks).
  template <class R>
  const R* value() const noexcept {
    if (!outcome_ || !outcome_->value || outcome_->type == nullptr ||
        *outcome_->type != typeid(R)) {
      return nullptr;
    }
    return static_cast<const R*>(outcome_->value.get());
  }

 private:
  std::shared_ptr<const detail::task_outcome> outcome_;
};

}  // namespace coproc
