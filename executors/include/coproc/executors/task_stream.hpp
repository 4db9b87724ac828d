#pragma once
/// coproc::task_stream<T>: the values a streaming task emits, read by its
/// caller while the task runs (basic_pool::stream).

#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "coproc/executors/detail/stream_state.hpp"

namespace coproc {

/// The reading end of a streaming task:
///
///     auto s = pool.stream(scan, path);
///     while (auto m = co_await s.next()) use(*m);
///
/// next() yields the task's values in emission order, then ends with the
/// task's own completion: std::nullopt when it returned, or its exception
/// (the task's own, errc::task_timeout, a worker_crashed_error, ...) thrown
/// by the next() after the last value emitted before it.
///
/// Cancellation: destroying the stream before its end, or cancelling a
/// next() that waits (for example `co_await (s.next() || timer.async_wait(...))`),
/// cancels the task as async_submit's cancellation does (a running task's
/// worker is killed and replaced, after pool_options::stop_grace); a
/// cancelled next() throws std::system_error with
/// asio::error::operation_aborted.
///
/// One consumer at a time; next() completes on the executor of the
/// coroutine that awaits it. The pool must outlive the stream.
template <class T>
class task_stream {
 public:
  task_stream() = default;
  explicit task_stream(std::shared_ptr<detail::stream_state<T>> state) : state_(std::move(state)) {}
  task_stream(task_stream&&) noexcept = default;
  task_stream& operator=(task_stream&& o) noexcept {
    if (this != &o) {
      cancel_unfinished();
      state_ = std::move(o.state_);
      batch_ = std::move(o.batch_);
      taken_ = o.taken_;
      read_ = o.read_;
      granted_ = o.granted_;
    }
    return *this;
  }
  ~task_stream() { cancel_unfinished(); }

  /// The next value, std::nullopt once the task returned, or the task's
  /// exception (see the class comment). Suspends while nothing is buffered.
  asio::awaitable<std::optional<T>> next() {
    if (auto v = try_next()) {
      co_return v;
    }
    auto st = state_;
    auto ex = co_await asio::this_coro::executor;
    for (;;) {
      bool grant = false;
      bool over = false;
      std::exception_ptr error;
      {
        std::lock_guard lock(st->mutex);
        if (!st->values.empty()) {
          adopt(*st);
        } else if (st->ended) {
          over = true;
          error = st->error;
        } else {
          grant = st->grant_due(read_, true);
          if (!st->consumer) {
            st->consumer = ex;
            st->wake.emplace(ex);
          }
          st->wake->expires_at(asio::steady_timer::time_point::max());
          st->waiting = true;
          ++st->wait_gen;
        }
      }
      if (grant) {
        granted_ = read_;
        tell_pool(*st);  // the worker may wait on what was read
      }
      if (taken_ < batch_.size()) {
        co_return take();
      }
      if (over) {
        if (error) {
          std::rethrow_exception(error);
        }
        co_return std::nullopt;
      }
      std::error_code ec;
      co_await st->wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      bool cancelled = false;
      {
        std::lock_guard lock(st->mutex);
        cancelled = st->waiting;  // nobody woke it: its own cancellation did
        st->waiting = false;
      }
      if (cancelled) {
        if (st->pool != nullptr) {
          st->pool->cancel(st->id);
        }
        throw std::system_error(asio::error::operation_aborted, "coproc::task_stream::next");
      }
    }
  }

  /// A value already here, without waiting, or std::nullopt when none is
  /// buffered now (which does not mean the stream ended: next() tells that).
  /// For many small values: `while (auto v = co_await s.next()) { do use(*v);
  /// while ((v = s.try_next())); }` pays one co_await per batch, not per value.
  std::optional<T> try_next() {
    if (taken_ == batch_.size()) {
      std::lock_guard lock(state_->mutex);
      if (state_->values.empty()) {
        return std::nullopt;
      }
      adopt(*state_);
    }
    std::optional<T> v(take());
    if (read_ - granted_ >= state_->grant_batch()) {
      bool grant;
      {
        std::lock_guard lock(state_->mutex);
        grant = state_->grant_due(read_, false);
      }
      granted_ = read_;
      if (grant) {
        tell_pool(*state_);
      }
    }
    return v;
  }

 private:
  // Under the lock: what the pool pushed becomes the reader's own batch,
  // taken from without locking.
  void adopt(detail::stream_state<T>& s) {
    batch_.clear();
    batch_.swap(s.values);
    taken_ = 0;
  }

  T take() {
    ++read_;
    return std::move(batch_[taken_++]);
  }

  // Outside the lock (the pool's lock is the outer one).
  void tell_pool(detail::stream_state<T>& s) {
    if (s.pool != nullptr) {
      s.pool->stream_read(s.id, read_);
    }
  }

  void cancel_unfinished() noexcept {
    if (!state_) {
      return;
    }
    bool ended;
    {
      std::lock_guard lock(state_->mutex);
      ended = state_->ended;
    }
    if (!ended && state_->pool != nullptr) {
      try {
        state_->pool->cancel(state_->id);
      } catch (...) {
        // Only an allocation can fail there; the task then runs to its end.
      }
    }
  }

  std::shared_ptr<detail::stream_state<T>> state_;
  // The reader's own: values taken from the state in one swap, and counts.
  std::vector<T> batch_;
  std::size_t taken_ = 0;
  std::uint64_t read_ = 0;     // values returned
  std::uint64_t granted_ = 0;  // read_ when the pool was last told
};

}  // namespace coproc
