#include "coproc/runtime/detail/futex_watcher.hpp"

#include <time.h>

#include <algorithm>
#include <climits>

#include "coproc/runtime/detail/futex.hpp"

namespace coproc::detail {

void futex_watcher::add(io_op* op, std::atomic<std::uint32_t>& word, std::uint32_t expected) {
  bool kick = false;
  {
    std::lock_guard lock(mutex_);
    word_thread* t = nullptr;
    if (auto it = by_word_.find(&word); it != by_word_.end()) {
      t = it->second;
    } else if (!idle_.empty()) {
      t = idle_.back();
      idle_.pop_back();
      t->word = &word;
      by_word_.emplace(&word, t);
    } else {
      auto fresh = std::make_unique<word_thread>();
      t = fresh.get();
      t->word = &word;
      threads_.push_back(std::move(fresh));
      by_word_.emplace(&word, t);
      t->thread = std::thread([this, t] { run(t); });
    }
    t->waiters.push_back({op, expected});
    // A thread asleep on another value would only see this waiter at its
    // next wake-up: wake it now (other sleepers on the word wake spuriously,
    // which every futex user must tolerate).
    kick = t->sleeping && t->sleeping_on != expected;
    t->wake.notify_one();
  }
  if (kick) {
    futex_wake(word, INT_MAX);
  }
}

bool futex_watcher::remove(io_op* op) {
  std::lock_guard lock(mutex_);
  for (auto& [word, t] : by_word_) {
    auto it = std::find_if(t->waiters.begin(), t->waiters.end(),
                           [op](const waiter& w) { return w.op == op; });
    if (it != t->waiters.end()) {
      t->waiters.erase(it);
      return true;  // the thread retires itself once its FUTEX_WAIT returns
    }
  }
  return false;
}

void futex_watcher::stop() noexcept {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
    for (auto& t : threads_) {
      t->wake.notify_one();
      // Words with waiters are still valid (their ops have not completed):
      // wake those at once; a thread asleep on a word without waiters
      // returns within recheck_ns.
      if (t->sleeping && !t->waiters.empty()) {
        futex_wake(*t->word, INT_MAX);
      }
    }
  }
  for (auto& t : threads_) {
    if (t->thread.joinable()) {
      t->thread.join();
    }
  }
}

std::vector<io_op*> futex_watcher::take_locked(word_thread* t, bool all, std::uint32_t value) {
  std::vector<io_op*> ready;
  auto keep = std::remove_if(t->waiters.begin(), t->waiters.end(), [&](const waiter& w) {
    if (all || w.expected != value) {
      ready.push_back(w.op);
      return true;
    }
    return false;
  });
  t->waiters.erase(keep, t->waiters.end());
  return ready;
}

void futex_watcher::retire_if_idle_locked(word_thread* t) {
  if (t->waiters.empty() && t->word != nullptr) {
    by_word_.erase(t->word);
    t->word = nullptr;
    idle_.push_back(t);
  }
}

void futex_watcher::run(word_thread* t) {
  std::unique_lock lock(mutex_);
  for (;;) {
    t->wake.wait(lock, [&] { return stopping_ || !t->waiters.empty(); });
    if (stopping_) {
      return;
    }
    // The word is read only while a waiter exists: its op keeps it valid.
    std::uint32_t value = t->word->load(std::memory_order_acquire);
    std::vector<io_op*> ready = take_locked(t, false, value);
    if (ready.empty()) {
      t->sleeping = true;
      t->sleeping_on = value;
      std::atomic<std::uint32_t>* word = t->word;
      lock.unlock();
      timespec limit{0, recheck_ns};
      int err = futex_wait(*word, value, &limit);
      lock.lock();
      t->sleeping = false;
      if (err == 0 && !stopping_) {
        // Woken: a FUTEX_WAKE may mean "one of you, try again" with the value
        // unchanged; every waiter re-checks its own condition.
        ready = take_locked(t, true, value);
      }
    }
    if (!ready.empty()) {
      lock.unlock();
      for (io_op* op : ready) {
        notify_(op);
      }
      lock.lock();
    }
    retire_if_idle_locked(t);
  }
}

}  // namespace coproc::detail
