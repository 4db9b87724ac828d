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

  /// A relaxed load of the shared word and a compare (with running_task's
  /// two relaxed loads, plain moves on x86): cheap in a task's inner loop.
  /// Relaxed suffices: the request carries no data the task then reads.
  bool stop_requested() const noexcept {
    return word != nullptr && id != 0 && word->load(std::memory_order_relaxed) == id;
  }
};

/// The worker's running task, one per process (a worker runs one task at a
/// time): process-wide, not per thread, so threads a task starts see the
/// request too (atomics: such a thread may outlive its task). Set by the
/// worker loop around each task; in any other process (the parent, a
/// coproc::process child) it stays empty.
struct running_task_state {
  std::atomic<const std::atomic<std::uint64_t>*> word{nullptr};
  std::atomic<std::uint64_t> id{0};

  void begin(const std::atomic<std::uint64_t>* stop_word, std::uint64_t task) noexcept {
    word.store(stop_word, std::memory_order_relaxed);
    id.store(task, std::memory_order_relaxed);
  }
  void end() noexcept { id.store(0, std::memory_order_relaxed); }
  task_stop_view view() const noexcept {
    return {word.load(std::memory_order_relaxed), id.load(std::memory_order_relaxed)};
  }
};
extern running_task_state running_task;

/// Whether the running task was asked to stop (false outside a task).
inline bool task_stop_requested() noexcept {
  return running_task.view().stop_requested();
}

}  // namespace coproc::detail
