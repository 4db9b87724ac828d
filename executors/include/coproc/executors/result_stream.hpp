#pragma once
/// coproc::result_stream: results of process_pool::map_unordered, as they complete.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>

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

/// Yields results in completion order while keeping at most `window` tasks in
/// flight: `while (auto r = co_await stream.next()) use(r->index, r->get());`.
/// One consumer at a time; the stream must outlive its next() calls.
/// Destroying it stops launching new items; items in flight still finish.
template <class R>
class result_stream {
 public:
  /// `launch(i, ex, done)` submits item i and calls done(error, value) on `ex`
  /// (the consumer's executor).
  using completion = std::function<void(std::exception_ptr, R)>;
  using launcher = std::function<void(std::size_t, const asio::any_io_executor&, completion)>;

  result_stream(launcher launch, std::size_t total, std::size_t window)
      : state_(std::make_shared<state>()) {
    state_->launch = std::move(launch);
    state_->total = total;
    state_->window = window == 0 ? 1 : window;
  }

  /// The next completed item, or std::nullopt when every item was yielded.
  asio::awaitable<std::optional<indexed_result<R>>> next() {
    auto st = state_;
    auto ex = co_await asio::this_coro::executor;
    if (!st->wake) {
      st->wake.emplace(ex, asio::steady_timer::time_point::max());
    }
    for (;;) {
      top_up(st, ex);
      if (!st->ready.empty()) {
        indexed_result<R> r = std::move(st->ready.front());
        st->ready.pop_front();
        co_return r;
      }
      if (st->in_flight == 0 && st->next_index == st->total) {
        co_return std::nullopt;
      }
      std::error_code ec;
      st->wake->expires_at(asio::steady_timer::time_point::max());
      co_await st->wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  /// Items not yet yielded (in flight, ready, or not started).
  std::size_t remaining() const {
    return state_->total - state_->next_index + state_->in_flight + state_->ready.size();
  }

 private:
  struct state {
    launcher launch;
    std::size_t total = 0;
    std::size_t window = 1;
    std::size_t next_index = 0;
    std::size_t in_flight = 0;
    std::deque<indexed_result<R>> ready;
    std::optional<asio::steady_timer> wake;
  };

  static void top_up(const std::shared_ptr<state>& st, const asio::any_io_executor& ex) {
    while (st->in_flight < st->window && st->next_index < st->total) {
      std::size_t i = st->next_index++;
      ++st->in_flight;
      std::weak_ptr<state> weak = st;
      st->launch(i, ex, [weak, i](std::exception_ptr e, R v) {
        if (auto s = weak.lock()) {
          --s->in_flight;
          s->ready.push_back({i, e, std::move(v)});
          s->wake->cancel();
        }
      });
    }
  }

  std::shared_ptr<state> state_;
};

}  // namespace coproc
