#include "worker_loads.hpp"

#include <bit>

#include "pool_core.hpp"

namespace coproc::detail {

int worker_loads::level_of(const worker_rec& w) {
  if (w.st == worker_rec::state::dead || w.killing || w.stopping_id != 0 ||
      w.inflight.size() >= pipeline_depth) {
    return -1;
  }
  return static_cast<int>(w.inflight.size());
}

void worker_loads::update(worker_rec& w, bool front) {
  int level = level_of(w);
  if (level != w.loads.level) {
    file(w, level, front);
  }
}

void worker_loads::file(worker_rec& w, int level, bool front) {
  unlink(w);
  if (level < 0 || static_cast<std::size_t>(level) >= heads_.size()) {
    return;
  }
  w.loads.level = level;
  ++filed_;
  idle_ += level == 0 ? 1 : 0;
  worker_rec*& head = heads_[static_cast<std::size_t>(level)];
  if (head == nullptr) {
    head = &w;
    w.loads.prev = w.loads.next = &w;  // a ring: the head's prev is the tail
    filled_ |= std::uint64_t{1} << level;
  } else if (front) {
    w.loads.next = head;
    w.loads.prev = head->loads.prev;
    head->loads.prev->loads.next = &w;
    head->loads.prev = &w;
    head = &w;
  } else {
    w.loads.next = head;
    w.loads.prev = head->loads.prev;
    head->loads.prev->loads.next = &w;
    head->loads.prev = &w;
  }
}

void worker_loads::unlink(worker_rec& w) {
  if (w.loads.level < 0) {
    return;
  }
  worker_rec*& head = heads_[static_cast<std::size_t>(w.loads.level)];
  if (w.loads.next == &w) {
    head = nullptr;
    filled_ &= ~(std::uint64_t{1} << w.loads.level);
  } else {
    w.loads.prev->loads.next = w.loads.next;
    w.loads.next->loads.prev = w.loads.prev;
    if (head == &w) {
      head = w.loads.next;
    }
  }
  --filed_;
  idle_ -= w.loads.level == 0 ? 1 : 0;
  w.loads = {};
}

worker_rec* worker_loads::pick(bool needs_arena, int min_load) {
  for (auto from = static_cast<std::size_t>(min_load); from < heads_.size();) {
    std::uint64_t levels = filled_ >> from << from;  // read anew: a stale entry moves
    if (levels == 0) {
      return nullptr;
    }
    auto level = static_cast<std::size_t>(std::countr_zero(levels));
    worker_rec* w = heads_[level];
    while (w != nullptr) {
      if (level_of(*w) != static_cast<int>(level)) {
        update(*w, false);  // stale: filed again, and this level looked at anew
        w = heads_[level];
        continue;
      }
      if (!needs_arena || w->channel.input_arena_free()) {
        return w;
      }
      // Large bodies only: each waits for an arena, so walking the level
      // costs little against the copy that follows.
      w = w->loads.next == heads_[level] ? nullptr : w->loads.next;
    }
    from = level + 1;
  }
  return nullptr;
}

}  // namespace coproc::detail
