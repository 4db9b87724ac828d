#pragma once
// The lifecycle of a process_pool's core, and its restart-intensity rule.
//
//   running --shutdown--> draining --no task left--> stopping --zygote gone--> closed
//      |                     ^
//      +--initializer failed, restarts past the limit--> broken --shutdown--+
//
// One state instead of a flag per question: what a submit gets, whether a
// dead worker is replaced, whether a shutdown may stop the zygote now.

#include <chrono>
#include <cstddef>
#include <deque>

namespace coproc::detail {

enum class pool_state {
  running,   // accepts tasks, replaces workers
  draining,  // shutdown asked: accepts nothing new, finishes (and replaces workers for) the rest
  stopping,  // nothing left: the zygote was told to stop, shutdown handlers wait for its exit
  broken,    // cannot run tasks (initializer failure, restarts past the limit): fails them
  closed,    // workers and zygote gone; only the destructor is left
};

/// True while the pool takes new tasks.
constexpr bool accepts_tasks(pool_state s) noexcept {
  return s == pool_state::running;
}

/// True while a worker that died is to be replaced (a drain still needs
/// workers for the tasks it accepted; `work_left` says whether any are left).
constexpr bool replaces_workers(pool_state s, bool work_left) noexcept {
  return s == pool_state::running || (s == pool_state::draining && work_left);
}

/// Erlang's restart intensity: at most `max_restarts` restarts within any
/// `period`. Each restart is recorded with its time; one more than allowed
/// says the pool should give up instead of restarting without end.
class restart_intensity {
 public:
  using clock = std::chrono::steady_clock;

  restart_intensity(std::size_t max_restarts, clock::duration period)
      : max_(max_restarts), period_(period) {}

  /// Records a restart at `now`; false when it is one too many within the period.
  bool allow(clock::time_point now = clock::now()) {
    while (!recent_.empty() && now - recent_.front() >= period_) {
      recent_.pop_front();
    }
    recent_.push_back(now);
    return recent_.size() <= max_;
  }

  std::size_t max_restarts() const noexcept { return max_; }
  clock::duration period() const noexcept { return period_; }

 private:
  std::size_t max_;
  clock::duration period_;
  std::deque<clock::time_point> recent_;
};

}  // namespace coproc::detail
