#include "pool_registry.hpp"

#include <algorithm>
#include <utility>

#include "pool_core.hpp"

namespace coproc::detail {

void pool_registry::add(const std::shared_ptr<pool_core>& core) {
  std::lock_guard lock(mutex_);
  std::erase_if(cores_, [](const std::weak_ptr<pool_core>& w) { return w.expired(); });
  cores_.push_back(core);
}

void pool_registry::shutdown() {
  std::vector<std::weak_ptr<pool_core>> cores;
  {
    std::lock_guard lock(mutex_);
    cores = std::move(cores_);
    cores_.clear();
  }
  for (auto& weak : cores) {
    if (auto core = weak.lock()) {
      core->on_context_gone();
    }
  }
}

// The context is being destroyed: nothing may be posted to it any more, and
// every I/O object of the pool must go now, while the services they belong
// to still exist. Pending operations are dropped: their handlers are
// destroyed uncalled, as Asio destroys the handlers still queued in a
// context that goes away.
void pool_core::on_context_gone() noexcept {
  std::vector<std::function<void()>> uncalled;  // destroyed once the lock is released
  try {
    locked(false, [&] {
      close_locked(true);
      uncalled = std::exchange(shutdown_done_, {});
      doorbell_.reset();
      reports_.reset();
      for (auto& w : workers_) {
        w->timer.reset();
      }
      rest_timer_.reset();
    });
  } catch (...) {
    // Dropping posts nothing; nothing else runs.
  }
}

}  // namespace coproc::detail
