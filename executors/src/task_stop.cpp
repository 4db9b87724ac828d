#include "coproc/executors/detail/task_stop.hpp"

namespace coproc::detail {

running_task_state running_task;

}  // namespace coproc::detail
