#pragma once
/// coproc::joinable_queue<T>: a coproc::queue<T> that also counts unfinished
/// tasks (Python's multiprocessing.JoinableQueue: task_done() and join()).

#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/post.hpp>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/queue.hpp"
#include "coproc/runtime/detail/futex.hpp"

namespace coproc {
namespace detail {

/// The unfinished-task count of a joinable_queue, in shared memory: the low
/// 31 bits count items put and not yet marked done; the top bit says that a
/// joiner sleeps (so task_done makes a wake-up call only when one does).
struct alignas(64) joinable_state {
  std::atomic<std::uint32_t> word{0};
};

inline constexpr std::uint32_t join_waiters = 0x8000'0000u;
inline constexpr std::uint32_t join_count_mask = 0x7fff'ffffu;

}  // namespace detail

/// A bounded FIFO shared by processes, as coproc::queue<T> (same bounds,
/// closing, robustness, blocking and async forms), that also counts
/// unfinished tasks: every successful put adds one, every task_done()
/// removes one, and join() waits until the count is zero (Python's
/// multiprocessing.JoinableQueue).
///
/// The count is raised before an item becomes visible (so a fast consumer's
/// task_done can never run ahead of it) and lowered again when a put fails
/// (closed, timed out, cancelled, too large): only items that entered the
/// queue are counted.
///
/// A consumer that dies between get() and task_done() (crash, SIGKILL) leaves
/// its item counted forever: join() would then wait forever, like Python's.
/// The rule: whoever joins and cannot rule such deaths out uses
/// try_join_for/try_join_until (false on timeout) or a cancellable
/// async_join, and a supervisor that learns of the death (for example from
/// coproc::process::async_join) calls task_done() on the dead consumer's
/// behalf. unfinished_tasks() shows the count at any time.
///
/// Does not move or copy (other processes point into its state).
/// Thread safety: every member may be called concurrently from any thread of
/// any process sharing the queue.
template <class T>
class joinable_queue {
 public:
  using value_type = T;

  /// An empty open queue (and its count) in their own memfd mappings.
  /// Throws as queue(queue_options).
  explicit joinable_queue(queue_options opts = {}) : q_(opts), count_(detail::own_region) {}

  joinable_queue(const joinable_queue&) = delete;
  joinable_queue& operator=(const joinable_queue&) = delete;

  // ---- producing: as coproc::queue, plus one unfinished task per item ----

  /// Appends `value`, blocking while full; counts one unfinished task.
  /// Throws as queue::put (nothing counted then).
  void put(const T& value) {
    counted c(*this);
    q_.put(value);
    c.keep();
  }
  /// Appends `value` if there is room now; false when full (nothing counted).
  bool try_put(const T& value) {
    counted c(*this);
    bool ok = q_.try_put(value);
    if (ok) {
      c.keep();
    }
    return ok;
  }
  /// Appends `value`, waiting at most `d`; false on timeout (nothing counted).
  template <class Rep, class Period>
  bool try_put_for(const T& value, const std::chrono::duration<Rep, Period>& d) {
    return try_put_until(value, std::chrono::steady_clock::now() + d);
  }
  /// Appends `value`, waiting until `deadline` at most; false on timeout.
  bool try_put_until(const T& value, std::chrono::steady_clock::time_point deadline) {
    counted c(*this);
    bool ok = q_.try_put_until(value, deadline);
    if (ok) {
      c.keep();
    }
    return ok;
  }

  /// Appends `value` without blocking the loop thread; counts one unfinished
  /// task once enqueued. Completion signature, executor and cancellation
  /// (terminal, partial, total) as queue::async_put; on any error nothing is
  /// counted.
  template <class Token>
  auto async_put(T value, Token&& token) {
    return asio::async_compose<Token, void(std::error_code)>(put_op{this, std::move(value)}, token);
  }

  // ---- consuming: exactly as coproc::queue; call task_done() per item ----

  /// As queue::get. Call task_done() once the item is processed.
  T get() { return q_.get(); }
  /// As queue::get_some (each item is one task).
  std::vector<T> get_some(std::size_t max) { return q_.get_some(max); }
  /// As queue::try_get.
  std::optional<T> try_get() { return q_.try_get(); }
  /// As queue::try_get_for.
  template <class Rep, class Period>
  std::optional<T> try_get_for(const std::chrono::duration<Rep, Period>& d) {
    return q_.try_get_for(d);
  }
  /// As queue::try_get_until.
  std::optional<T> try_get_until(std::chrono::steady_clock::time_point deadline) {
    return q_.try_get_until(deadline);
  }
  /// As queue::async_get.
  template <class Token>
  requires std::default_initializable<T>
  auto async_get(Token&& token) { return q_.async_get(std::forward<Token>(token)); }

  // ---- tasks ----

  /// Marks `n` (default one) fetched items as processed; when the count
  /// reaches zero every joiner (blocked or async, in any process) wakes.
  /// Throws std::system_error with std::errc::invalid_argument when called
  /// more times than items were put (Python's ValueError); nothing changes then.
  void task_done(std::uint32_t n = 1) {
    std::atomic<std::uint32_t>& w = count_->word;
    std::uint32_t v = w.load(std::memory_order_relaxed);
    do {
      if ((v & detail::join_count_mask) < n) {
        throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                                "coproc::joinable_queue::task_done: called more times than "
                                "items were put");
      }
    } while (
        !w.compare_exchange_weak(v, v - n, std::memory_order_acq_rel, std::memory_order_relaxed));
    wake_if_zero(v, n);
  }

  /// Items put and not yet marked done (a snapshot).
  std::uint32_t unfinished_tasks() const noexcept {
    return count_->word.load(std::memory_order_acquire) & detail::join_count_mask;
  }

  /// Blocks until every item put so far was marked done (returns at once
  /// when none is unfinished). Never returns while a dead consumer's item
  /// stays counted: see the class comment, and prefer try_join_for there.
  void join() { (void)join_until(nullptr); }

  /// As join(), for at most `d`: false on timeout.
  template <class Rep, class Period>
  bool try_join_for(const std::chrono::duration<Rep, Period>& d) {
    auto deadline = std::chrono::steady_clock::now() + d;
    return join_until(&deadline);
  }
  /// As join(), until `deadline` at most: false on timeout.
  bool try_join_until(std::chrono::steady_clock::time_point deadline) {
    return join_until(&deadline);
  }

  /// Waits, without blocking the loop thread, until no task is unfinished.
  ///
  /// Completion signature: void(std::error_code): empty once the count was
  /// zero, asio::error::operation_aborted when cancelled. Runs on the
  /// handler's associated executor (an io_context's); never completes inside
  /// this call. Cancellation: terminal, partial and total (combine with a
  /// timer through awaitable operators for a timed join).
  template <class Token>
  auto async_join(Token&& token) {
    return detail::async_futex_loop(join_machine{count_.operator->()}, std::forward<Token>(token));
  }

  // ---- state: as coproc::queue ----

  /// Closes the queue (see queue::close). The count is left as it is:
  /// items still queued stay unfinished until fetched and marked done.
  void close() noexcept { q_.close(); }
  bool closed() const noexcept { return q_.closed(); }
  std::size_t size() const noexcept { return q_.size(); }
  bool empty() const noexcept { return q_.empty(); }
  std::size_t max_items() const noexcept { return q_.max_items(); }
  std::size_t max_bytes() const noexcept { return q_.max_bytes(); }
  std::size_t max_item_bytes() const noexcept { return q_.max_item_bytes(); }

 private:
  // Raises the count for one put; lowers it again unless keep() was called.
  class counted {
   public:
    explicit counted(joinable_queue& q) : q_(q) { q_.count_up(); }
    counted(const counted&) = delete;
    counted& operator=(const counted&) = delete;
    ~counted() {
      if (!kept_) {
        q_.count_down();
      }
    }
    void keep() noexcept { kept_ = true; }

   private:
    joinable_queue& q_;
    bool kept_ = false;
  };

  void count_up() {
    std::uint32_t v = count_->word.fetch_add(1, std::memory_order_relaxed);
    if ((v & detail::join_count_mask) == detail::join_count_mask) {
      count_->word.fetch_sub(1, std::memory_order_relaxed);
      throw std::system_error(std::make_error_code(std::errc::value_too_large),
                              "coproc::joinable_queue: 2^31 - 1 unfinished tasks");
    }
  }

  // Undoes count_up() of a put that failed.
  void count_down() noexcept {
    std::uint32_t v = count_->word.fetch_sub(1, std::memory_order_acq_rel);
    wake_if_zero(v, 1);
  }

  // `old` is the word before `n` was taken off it.
  void wake_if_zero(std::uint32_t old, std::uint32_t n) noexcept {
    if ((old & detail::join_count_mask) == n && (old & detail::join_waiters) != 0) {
      // Joiners that wake and see a new count (a put raced in) set the flag
      // again before they sleep.
      count_->word.fetch_and(~detail::join_waiters, std::memory_order_relaxed);
      detail::futex_wake(count_->word, INT_MAX);
    }
  }

  bool join_until(const std::chrono::steady_clock::time_point* deadline) {
    std::atomic<std::uint32_t>& w = count_->word;
    std::uint32_t v = w.load(std::memory_order_acquire);
    for (;;) {
      if ((v & detail::join_count_mask) == 0) {
        return true;
      }
      if ((v & detail::join_waiters) == 0 &&
          !w.compare_exchange_weak(v, v | detail::join_waiters, std::memory_order_acquire)) {
        continue;
      }
      timespec ts{};
      if (deadline && !detail::remaining(*deadline, ts)) {
        return false;
      }
      detail::futex_wait(w, v | detail::join_waiters, deadline ? &ts : nullptr);
      v = w.load(std::memory_order_acquire);
    }
  }

  struct join_machine {
    detail::joinable_state* s;
    detail::futex_step step() {
      std::uint32_t v = s->word.load(std::memory_order_acquire);
      for (;;) {
        if ((v & detail::join_count_mask) == 0) {
          return detail::futex_step::finish();
        }
        if ((v & detail::join_waiters) != 0 ||
            s->word.compare_exchange_weak(v, v | detail::join_waiters, std::memory_order_acquire)) {
          return detail::futex_step::wait(s->word, v | detail::join_waiters);
        }
      }
    }
    void after_wait() noexcept {}
    bool abandon() noexcept { return true; }  // the zero wake-up is a broadcast
    bool cancellable() const noexcept { return true; }
  };

  struct put_op {
    joinable_queue* jq;
    T value;
    std::error_code count_error{};  // set: the count is full, nothing was put
    bool posted = false;

    // Initiation, or re-entry after posting an immediate error.
    template <class Self>
    void operator()(Self& self) {
      if (posted) {
        self.complete(count_error);
        return;
      }
      self.reset_cancellation_state(asio::enable_total_cancellation());
      try {
        jq->count_up();
      } catch (const std::system_error& e) {
        count_error = e.code();
        posted = true;  // never complete inside the initiating function
        asio::post(std::move(self));
        return;
      }
      jq->q_.async_put(std::move(value), std::move(self));
    }

    // The queue's put completed: a failed put is not counted.
    template <class Self>
    void operator()(Self& self, std::error_code ec) {
      if (ec) {
        jq->count_down();
      }
      self.complete(ec);
    }
  };

  queue<T> q_;
  detail::state_holder<detail::joinable_state> count_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <class T>
inline constexpr bool is_process_shared_v<joinable_queue<T>> = true;

}  // namespace coproc
