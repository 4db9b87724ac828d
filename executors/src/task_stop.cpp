#include "coproc/executors/detail/task_stop.hpp"

namespace coproc::detail {

task_stop_view running_task;

}  // namespace coproc::detail
