#pragma once
/// coproc::result_stream: results of process_pool::map_unordered, as they complete.

#include <algorithm>
#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <vector>

namespace coproc {

/// One completed item of an unordered map: its index in the input and its
/// value, or the exception its task ended with.
template <class R>
struct indexed_result {
  std::size_t index = 0;
  std::exception_ptr error;
  R value{};

  /// The value; rethrows the task's exception if it failed.
  R& get() {
    if (error) {
      std::rethrow_exception(error);
    }
    return value;
  }
};

/// One completed chunk of an unordered map: the items [first, first +
/// values.size()) of the input, or, when the chunk failed, `count` items and
/// the exception.
template <class R>
struct indexed_chunk {
  std::size_t first = 0;
  std::size_t count = 0;
  std::exception_ptr error;
  std::vector<R> values;  ///< empty when error is set
};

/// Yields results in completion order while keeping at most `window` tasks in
/// flight: `while (auto r = co_await stream.next()) use(r->index, r->get());`.
/// Each task runs a chunk of consecutive items; with chunk size 0 the size
/// adapts: the first tasks carry one item each, then each chunk is sized from
/// the measured time per item so that a task takes about 2 ms, at most the
/// items left divided by the window (so every worker keeps a share). A failed
/// chunk yields its error for each of its items.
/// One consumer at a time; the stream must outlive its next() calls.
/// Destroying it stops launching new items; items in flight still finish.
template <class R>
class result_stream {
 public:
  /// `launch(first, count, ex, done)` submits items [first, first + count) as
  /// one task and calls done(error, values) on `ex` (the consumer's executor).
  using completion = std::function<void(std::exception_ptr, std::vector<R>)>;
  using launcher =
      std::function<void(std::size_t, std::size_t, const asio::any_io_executor&, completion)>;

  /// With `start_on`, the first `window` tasks are launched now, completing
  /// on `start_on` (which should run on the consumer's io_context); without
  /// it, at the first next().
  result_stream(launcher launch, std::size_t total, std::size_t window, std::size_t chunk_size = 1,
                std::optional<asio::any_io_executor> start_on = std::nullopt)
      : state_(std::make_shared<state>()) {
    state_->launch = std::move(launch);
    state_->total = total;
    state_->window = window == 0 ? 1 : window;
    state_->fixed_chunk = chunk_size;
    if (start_on) {
      std::lock_guard lock(state_->mutex);
      state_->wake.emplace(*start_on, asio::steady_timer::time_point::max());
      state_->consumer = *start_on;
      top_up(state_, *start_on);
    }
  }

  /// The next completed item, or std::nullopt when every item was yielded.
  /// Completes without waiting when a completed chunk still holds items;
  /// suspends on the consumer's executor otherwise.
  /// Cost: one asio::awaitable per item, whose frame and two resumptions Asio
  /// 1.22 always pays (its awaitable is never ready at once): about 30 ns, so
  /// for many tiny items drain what is buffered with try_next() in between:
  /// `while (auto r = co_await s.next()) { do use(*r); while ((r = s.try_next())); }`.
  asio::awaitable<std::optional<indexed_result<R>>> next() {
    state& s = *state_;
    if (s.taken < s.current.count) {
      refill_if_due(state_);
      co_return take_one(s);
    }
    auto st = state_;  // the coroutine keeps the state while it waits
    if (!co_await fetch(st)) {
      co_return std::nullopt;
    }
    co_return take_one(*st);
  }

  /// An item that is already completed, without waiting, or std::nullopt
  /// when none is buffered now (which does not mean the stream is over:
  /// next() tells that). Asio channels' try_receive, for the same reason:
  /// no coroutine step per item.
  std::optional<indexed_result<R>> try_next() {
    state& s = *state_;
    if (s.taken == s.current.count) {
      std::lock_guard lock(s.mutex);
      if (s.ready.empty()) {
        return std::nullopt;
      }
      adopt_front(s);
    }
    refill_if_due(state_);
    return take_one(s);
  }

  /// The next completed chunk (what is left of it when next() took some of
  /// its items), or std::nullopt when every item was yielded. For many small
  /// items: one co_await per chunk instead of one per item.
  asio::awaitable<std::optional<indexed_chunk<R>>> next_chunk() {
    auto st = state_;
    if (st->taken == st->current.count && !co_await fetch(st)) {
      co_return std::nullopt;
    }
    indexed_chunk<R> c = std::move(st->current);
    if (st->taken != 0) {  // next() took the first items already
      c.first += st->taken;
      c.count -= st->taken;
      if (!c.error) {
        c.values.erase(c.values.begin(), c.values.begin() + static_cast<std::ptrdiff_t>(st->taken));
      }
    }
    st->current = {};
    st->taken = 0;
    co_return c;
  }

  /// Items not yet yielded (in flight, ready, or not started). Called by the
  /// consumer, like next().
  std::size_t remaining() const {
    std::lock_guard lock(state_->mutex);
    return state_->total - state_->next_index + state_->in_flight_items + state_->ready_items +
           (state_->current.count - state_->taken);
  }

 private:
  using clock = std::chrono::steady_clock;
  /// The time one task should take when the chunk size adapts: long against
  /// a task's round trip (a few microseconds), short for streaming.
  static constexpr std::chrono::nanoseconds target_task_time = std::chrono::milliseconds(2);

  struct state {
    launcher launch;
    std::size_t total = 0;
    std::size_t window = 1;
    std::size_t fixed_chunk = 0;  // 0: adaptive
    std::size_t next_index = 0;
    std::size_t in_flight = 0;           // tasks
    std::size_t in_flight_items = 0;     // items in those tasks
    double ns_per_item = 0;              // measured; 0 until a chunk completed
    std::deque<indexed_chunk<R>> ready;  // completed chunks, oldest first
    std::size_t ready_items = 0;         // items in `ready`
    std::optional<asio::steady_timer> wake;
    std::optional<asio::any_io_executor> consumer;  // where tasks complete
    // A task finished since the consumer last launched: the window has room.
    std::atomic<bool> refill{false};
    // The consumer's own: the chunk it takes items from, and how many it took.
    // Not under the lock, so that an item already here costs no locking.
    indexed_chunk<R> current;
    std::size_t taken = 0;
    // Completions may arrive on another thread of the loop (the window starts
    // on the pool's executor): the shared part is touched under this lock.
    std::mutex mutex;
  };

  static std::size_t next_chunk(const state& s) {
    std::size_t left = s.total - s.next_index;
    if (s.fixed_chunk != 0) {
      return std::min(left, s.fixed_chunk);
    }
    if (s.ns_per_item <= 0) {
      return 1;  // nothing measured yet
    }
    double wanted = static_cast<double>(target_task_time.count()) / s.ns_per_item;
    std::size_t share = std::max<std::size_t>(1, left / s.window);
    std::size_t size = wanted < 1 ? 1 : static_cast<std::size_t>(wanted);
    return std::min({left, share, size});
  }

  static void top_up(const std::shared_ptr<state>& st, const asio::any_io_executor& ex) {
    while (st->in_flight < st->window && st->next_index < st->total) {
      std::size_t first = st->next_index;
      std::size_t count = next_chunk(*st);
      st->next_index += count;
      ++st->in_flight;
      st->in_flight_items += count;
      std::weak_ptr<state> weak = st;
      auto started = clock::now();
      st->launch(first, count, ex,
                 [weak, first, count, started](std::exception_ptr e, std::vector<R> values) {
                   if (auto s = weak.lock()) {
                     std::lock_guard lock(s->mutex);
                     --s->in_flight;
                     s->in_flight_items -= count;
                     learn(*s, count, clock::now() - started);
                     if (!e && values.size() != count) {
                       e = short_chunk();
                     }
                     if (e) {
                       values.clear();
                     }
                     s->ready.push_back({first, count, e, std::move(values)});
                     s->ready_items += count;
                     s->refill.store(true, std::memory_order_relaxed);
                     if (s->wake) {
                       s->wake->cancel();
                     }
                   }
                 });
    }
  }

  // Waits (on the consumer's executor) until a chunk is ready and makes it the
  // current one; false when every item was yielded.
  static asio::awaitable<bool> fetch(std::shared_ptr<state> st) {
    auto ex = co_await asio::this_coro::executor;
    for (;;) {
      {
        std::lock_guard lock(st->mutex);
        if (!st->wake) {
          st->wake.emplace(ex, asio::steady_timer::time_point::max());
        }
        if (!st->consumer) {
          st->consumer = ex;
        }
        top_up(st, *st->consumer);
        if (!st->ready.empty()) {
          adopt_front(*st);
          co_return true;
        }
        if (st->in_flight == 0 && st->next_index == st->total) {
          co_return false;
        }
        st->wake->expires_at(asio::steady_timer::time_point::max());
      }
      std::error_code ec;
      co_await st->wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // Under the lock: the oldest ready chunk becomes the consumer's current one.
  static void adopt_front(state& s) {
    s.current = std::move(s.ready.front());
    s.ready.pop_front();
    s.ready_items -= s.current.count;
    s.taken = 0;
  }

  // Launches into the room completed tasks left in the window (at once, not
  // only when the consumer runs out of buffered items: a slow consumer still
  // keeps every worker busy). One relaxed load when there is none.
  static void refill_if_due(const std::shared_ptr<state>& st) {
    if (st->refill.load(std::memory_order_relaxed)) {
      std::lock_guard lock(st->mutex);
      st->refill.store(false, std::memory_order_relaxed);
      if (st->consumer) {
        top_up(st, *st->consumer);
      }
    }
  }

  static indexed_result<R> take_one(state& s) {
    indexed_chunk<R>& c = s.current;
    indexed_result<R> r;
    r.index = c.first + s.taken;
    r.error = c.error;
    if (!c.error) {
      r.value = std::move(c.values[s.taken]);
    }
    ++s.taken;
    return r;
  }

  // Per-item time, smoothed: the latest chunk counts half.
  static void learn(state& s, std::size_t count, clock::duration took) {
    double per =
        static_cast<double>(std::chrono::nanoseconds(took).count()) / static_cast<double>(count);
    s.ns_per_item = s.ns_per_item <= 0 ? per : (s.ns_per_item + per) / 2;
  }

  static std::exception_ptr short_chunk() {
    return std::make_exception_ptr(
        std::system_error(std::make_error_code(std::errc::protocol_error),
                          "coproc: a chunk returned too few values"));
  }

  std::shared_ptr<state> state_;
};

}  // namespace coproc
