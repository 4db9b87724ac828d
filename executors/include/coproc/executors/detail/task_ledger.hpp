#pragma once
// task_ledger: a pool's books of the tasks it accepted, the same for every
// backend: ids, admission with back-pressure (accepted tasks wait, in order,
// while the pool holds its limit), withdrawing a queued task, failing or
// dropping everything, the counters of pool_stats, and the completions the
// pool owes. Where a task runs (a worker's ring, a rank) is the backend's.
//
// Not thread-safe: the pool calls it under its own lock. A task that ends is
// only settled here (its outcome stored); its handler runs, and the task is
// destroyed, by deliveries::run once the pool released its lock. So no user
// code (handler, handler destructor, argument destructor) ever runs under
// the lock, and a handler that submits again, or destroys the pool, finds
// it unlocked: a plain mutex suffices.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coproc/executors/detail/task_op.hpp"
#include "coproc/executors/pool_stats.hpp"

namespace coproc::detail {

/// What a pool owes once it released its lock: settled tasks to hand to
/// their handlers, tasks to destroy uncalled, and other completions (a
/// shutdown's handler).
class deliveries {
 public:
  deliveries() = default;
  deliveries(deliveries&& o) noexcept { swap(o); }
  /// Swaps: what this held is run by `o`'s destructor, never lost.
  deliveries& operator=(deliveries&& o) noexcept {
    swap(o);
    return *this;
  }
  /// Posts what was never run (an exception left a pool's step half-way).
  ~deliveries();

  void settled(task_op* op);
  void dropped(task_op* op) { dropped_.push_back(op); }
  void call(std::function<void()> f) { calls_.push_back(std::move(f)); }
  bool empty() const { return head_ == nullptr && dropped_.empty() && calls_.empty(); }

  /// Delivers everything, outside any lock. `may_run_inline`: the caller is
  /// the pool's own completion handler (not an initiating function), so a
  /// handler whose executor runs in this thread may run now. If a handler
  /// throws, the rest are posted before the exception leaves.
  void run(bool may_run_inline);

 private:
  void swap(deliveries& o) noexcept {
    std::swap(head_, o.head_);
    std::swap(tail_, o.tail_);
    dropped_.swap(o.dropped_);
    calls_.swap(o.calls_);
  }

  task_op* head_ = nullptr;
  task_op* tail_ = nullptr;
  std::vector<task_op*> dropped_;
  std::vector<std::function<void()>> calls_;
};

class task_ledger {
 public:
  /// How a task that ends without a value is counted.
  enum class ending { failed, cancelled };

  /// `limit`: tasks admitted (queued, or sent and not finished) before a
  /// submit waits for room.
  explicit task_ledger(std::size_t limit = 1) : limit_(limit == 0 ? 1 : limit) {}
  task_ledger(const task_ledger&) = delete;
  task_ledger& operator=(const task_ledger&) = delete;

  /// Sets the limit (a pool that opens sessions sets it per session).
  void set_limit(std::size_t limit) { limit_ = limit == 0 ? 1 : limit; }

  /// Takes `op` in: queued if the limit allows, otherwise waiting (its
  /// caller stays suspended) until admitted in order. An op without an id
  /// gets a fresh one (mpi_pool's come with theirs: process-wide).
  void accept(task_op* op);
  /// Fails `op` without taking it in (the pool does not accept tasks now).
  void refuse(task_op* op, std::exception_ptr why);

  /// The oldest queued task, or null.
  task_op* front() const { return queue_.empty() ? nullptr : queue_.front(); }
  /// The front task left the queue for a worker; waiting tasks move up.
  void dispatched();
  /// Tasks taken back from a worker that died go first, in their order.
  void requeue(const std::vector<task_op*>& ops);
  /// Takes a task that was not dispatched out of the queue or the waiting
  /// list; false when it was not there.
  bool withdraw_queued(task_op* op);

  task_op* find(std::uint64_t id) const;
  bool empty() const { return ops_.empty(); }
  /// Tasks accepted and not settled: queued, waiting, or in a worker.
  std::size_t size() const { return ops_.size(); }
  std::size_t queued() const { return queue_.size(); }
  std::size_t waiting() const { return waiting_.size(); }

  /// Ends `op` with what its worker sent: the encoded value when `value`,
  /// else an encoded remote_error (decoded now, delivered later).
  void complete(task_op* op, bool value, std::span<const std::byte> body);
  /// The task's exception an encoded remote_error carries (or what decoding
  /// it threw).
  static std::exception_ptr task_exception(std::span<const std::byte> body);
  /// Ends `op` with `why`.
  void fail(task_op* op, std::exception_ptr why, ending how = ending::failed);
  /// Ends every task with `why`; returns how many.
  std::size_t fail_all(const std::exception_ptr& why);
  /// Ends every task by destroying it uncalled (its io_context is going).
  void drop_all();
  /// Forgets every task without completing it (a forked copy of the pool).
  void forget_all();

  pool_stats& stats() { return stats_; }
  const pool_stats& stats() const { return stats_; }

  /// What ended since the last call, to run once the lock is released.
  deliveries take_deliveries() { return std::move(out_); }
  /// For completions that are not tasks (a shutdown's handler).
  deliveries& pending() { return out_; }

 private:
  void erase(task_op* op);
  void admit();

  std::size_t limit_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, task_op*> ops_;  // every task accepted and not ended
  std::deque<task_op*> queue_;                       // admitted, not dispatched
  std::deque<task_op*> waiting_;                     // accepted past the limit
  pool_stats stats_;
  deliveries out_;
};

}  // namespace coproc::detail
