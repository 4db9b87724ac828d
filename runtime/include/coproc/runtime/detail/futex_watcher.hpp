#pragma once
// Turns FUTEX_WAKEs on shared-memory words into completions, for the loops
// that cannot wait on a futex themselves: the epoll backend, and a ring
// without IORING_OP_FUTEX_WAIT (kernels before 6.7, Debian 12's 6.1 among
// them). No kernel object makes a futex visible to epoll, so one thread per
// word being waited on sleeps in FUTEX_WAIT and hands each wake-up to the
// loop. Waits on the same word share that thread; a thread whose word has no
// waiter left is parked and reused for the next word.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "coproc/runtime/detail/io_op.hpp"

namespace coproc::detail {

class futex_watcher {
 public:
  /// Called on a watcher thread, without the watcher's lock, once for each op
  /// whose word was woken or no longer holds its expected value.
  using notify_fn = std::function<void(io_op*)>;

  explicit futex_watcher(notify_fn notify) : notify_(std::move(notify)) {}
  ~futex_watcher() { stop(); }
  futex_watcher(const futex_watcher&) = delete;
  futex_watcher& operator=(const futex_watcher&) = delete;

  /// Watches `word` for `op` while it holds `expected`. Thread-safe.
  void add(io_op* op, std::atomic<std::uint32_t>& word, std::uint32_t expected);
  /// Stops watching for `op`. True: it will not be notified; false: it was
  /// (or is being) notified already. Thread-safe.
  bool remove(io_op* op);
  /// Joins every thread; ops still watched are not notified. Idempotent.
  void stop() noexcept;

  /// How long a watcher sleeps in one FUTEX_WAIT before it looks at its
  /// waiters again (so a word whose last waiter left is never touched later).
  static constexpr std::int64_t recheck_ns = 50'000'000;

 private:
  struct waiter {
    io_op* op;
    std::uint32_t expected;
  };
  struct word_thread {
    std::atomic<std::uint32_t>* word = nullptr;
    std::vector<waiter> waiters;
    bool sleeping = false;
    std::uint32_t sleeping_on = 0;
    std::condition_variable wake;
    std::thread thread;
  };

  void run(word_thread* t);
  std::vector<io_op*> take_locked(word_thread* t, bool all, std::uint32_t value);
  void retire_if_idle_locked(word_thread* t);

  notify_fn notify_;
  std::mutex mutex_;
  bool stopping_ = false;
  std::vector<std::unique_ptr<word_thread>> threads_;  // every thread ever started
  std::unordered_map<std::atomic<std::uint32_t>*, word_thread*> by_word_;
  std::vector<word_thread*> idle_;
};

}  // namespace coproc::detail
