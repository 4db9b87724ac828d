#pragma once
// worker_loads: the pool's workers that can take a task now, filed by how
// many tasks each has in flight, so that dispatch finds a least-loaded
// worker in O(pipeline depth) steps instead of scanning every worker (the
// parent's cost per task grew with the pool: issue 19).
//
// One intrusive list per load level, and a bit per level that is not empty,
// so that the lowest is one count-trailing-zeros away. A worker that was just relieved goes
// to the front of its level: it is the likeliest to be still spinning for
// its next task, with its caches warm. A worker that starts goes to the
// back: the first forked takes the first task.
//
// The index is told of every change (update() after a worker's load or
// state changed); pick() checks what it finds anyway and files a stale entry
// again, so a change it missed costs a step, never a task sent to a worker
// that cannot take it.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace coproc::detail {

struct worker_rec;

/// A worker's place in the index (a member of worker_rec).
struct load_links {
  worker_rec* prev = nullptr;
  worker_rec* next = nullptr;
  int level = -1;  // -1: not filed (dead, being killed, or full)
};

class worker_loads {
 public:
  /// `depth`: tasks in flight per worker, at most 64.
  explicit worker_loads(std::size_t depth) : heads_(depth, nullptr) {}

  /// Files `w` under its tasks in flight, or takes it out when it cannot
  /// take a task (dead, being killed, full). `front`: see the top comment.
  void update(worker_rec& w, bool front);

  /// A worker with the fewest tasks in flight, at least `min_load` of them
  /// (with a free input arena when `needs_arena`), or nullptr.
  worker_rec* pick(bool needs_arena, int min_load = 0);

  /// Workers filed with at least one task in flight (not counting full ones).
  std::size_t busy() const { return filed_ - idle_; }
  /// Workers filed with no task in flight.
  std::size_t idle() const { return idle_; }

 private:
  static int level_of(const worker_rec& w);
  void file(worker_rec& w, int level, bool front);
  void unlink(worker_rec& w);
  std::vector<worker_rec*> heads_;  // one list per level below the depth
  std::uint64_t filled_ = 0;        // bit L: heads_[L] is not empty
  std::size_t filed_ = 0;           // workers in every list
  std::size_t idle_ = 0;            // of them in heads_[0]
};

}  // namespace coproc::detail
