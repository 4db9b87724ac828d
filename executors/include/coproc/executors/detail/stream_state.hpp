#pragma once
// stream_state: what a streaming task's operation (in the pool) and its
// task_stream (the caller's) share: the values emitted and not yet read,
// the task's end, the read count the pool grants credit from, and the
// consumer's wake-up.
//
// Two locks meet here: the pool's (held while it drains a ring into the
// state) and the state's own. The state's lock is always the inner one: the
// caller's side releases it before it calls into the pool (read(),
// cancel()), so no thread ever waits for the pool's lock while it holds
// the state's.

#include <asio/any_io_executor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "coproc/executors/detail/task_op.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {

template <class T>
struct stream_state : std::enable_shared_from_this<stream_state<T>> {
  explicit stream_state(std::size_t unread_limit) : buffer(unread_limit == 0 ? 1 : unread_limit) {}

  const std::size_t buffer;  // values the worker may emit past the reads granted

  std::mutex mutex;
  std::vector<T> values;           // emitted, not yet taken by the reader
  bool ended = false;              // the task's outcome is here
  std::exception_ptr error;        // its exception, when it failed
  std::uint64_t granted_from = 0;  // the reader's count of values read, as last granted
  std::uint64_t received = 0;      // values the pool pushed
  bool waiting = false;            // the consumer sleeps on `wake`
  std::uint64_t wait_gen = 0;      // which sleep: a late wake-up of an earlier one is ignored
  std::optional<asio::steady_timer> wake;
  std::optional<asio::any_io_executor> consumer;
  task_canceller* pool = nullptr;  // set when the pool took the task in
  std::uint64_t id = 0;

  // ---- the pool's side (under the pool's lock) ----

  /// Appends what the worker emitted. Throws frame_corrupt when the worker
  /// emitted past the credit it was granted: its values are then not taken.
  void push(std::vector<T>& batch) {
    std::lock_guard lock(mutex);
    if (received + batch.size() > granted_from + buffer) {
      throw std::system_error(coproc::errc::frame_corrupt,
                              "streaming task emitted " + std::to_string(received + batch.size()) +
                                  " values, past the " + std::to_string(granted_from + buffer) +
                                  " its reader allowed");
    }
    received += batch.size();
    if (values.empty()) {
      values.swap(batch);  // the reader took everything: hand the buffer over whole
    } else {
      values.insert(values.end(), std::make_move_iterator(batch.begin()),
                    std::make_move_iterator(batch.end()));
    }
    batch.clear();
    wake_consumer();
  }

  /// The task ended (`why` null: it returned). `post_wake` false when the
  /// io_context is going away: nothing may be posted to it.
  void end(std::exception_ptr why, bool post_wake = true) {
    std::lock_guard lock(mutex);
    ended = true;
    error = std::move(why);
    if (post_wake) {
      wake_consumer();
    }
  }

  // ---- the consumer's side ----

  /// Values read between two grants while the reader keeps reading: half
  /// the buffer, so a task on the reader's CPU runs a long turn each time
  /// (a quarter cost 30% of the one-core throughput: bench_emit).
  std::uint64_t grant_batch() const { return buffer / 2 == 0 ? 1 : buffer / 2; }

  /// Under the lock: whether the reader, having read `read` values, should
  /// tell the pool: a batch was read since the last grant, or the reader is
  /// about to wait (the worker may be blocked on the values just read).
  bool grant_due(std::uint64_t read, bool before_wait) {
    if (ended || read == granted_from || (!before_wait && read - granted_from < grant_batch())) {
      return false;
    }
    granted_from = read;
    return true;
  }

 private:
  /// Under the lock: a consumer asleep on `wake` is woken on its own
  /// executor (timers are not thread-safe), once per batch.
  void wake_consumer() {
    if (!waiting) {
      return;
    }
    waiting = false;
    asio::post(*consumer, [self = this->shared_from_this(), gen = wait_gen] {
      std::lock_guard lock(self->mutex);
      if (gen == self->wait_gen) {
        // Expired, not cancelled: a wait not yet begun completes at once too.
        self->wake->expires_at(asio::steady_timer::time_point::min());
      }
    });
  }
};

}  // namespace coproc::detail
