#pragma once
// task_attempts: the failed attempts of a task the pool runs again after its
// worker crashed (pool_options::retries, coproc::retry_policy). Made at a
// retryable task's first failure only, so a task that is never retried pays
// one null pointer.

#include <cstddef>
#include <string>
#include <vector>

#include "coproc/runtime/exit_status.hpp"

namespace coproc::detail {

struct task_attempts {
  std::vector<exit_status> statuses;  // how each failed attempt's worker ended, in order
  std::string reasons;                // "attempt 1: ...; attempt 2: ...", for the final error
};

}  // namespace coproc::detail
