#pragma once
// The stop request a running task sees: where the worker loop publishes the
// running task's id and its slot's stop word (slot_shared::stop_id, written
// by the parent), and the one check every reader makes (this_task.hpp, and
// later a streaming emitter that should stop emitting).

#include <atomic>
#include <cstdint>

namespace coproc::detail {

/// The running task and the word that names the task asked to stop.
struct task_stop_view {
  const std::atomic<std::uint64_t>* word = nullptr;  // null outside a worker
  std::uint64_t id = 0;                              // 0 between tasks

  /// One relaxed load and a compare: a task may poll it in its inner loop.
  /// Relaxed suffices: the request carries no data the task then reads.
  bool stop_requested() const noexcept {
    return word != nullptr && id != 0 && word->load(std::memory_order_relaxed) == id;
  }
};

/// The worker's running task, one per process (a worker runs one task at a
/// time): process-wide, not per thread, so threads a task starts see the
/// request too. Set by the worker loop around each task; in any other
/// process (the parent, a coproc::process child) it stays empty.
extern task_stop_view running_task;

/// Whether the running task was asked to stop (false outside a task).
inline bool task_stop_requested() noexcept {
  return running_task.stop_requested();
}

}  // namespace coproc::detail
