#pragma once
/// coproc::result_stream: results of process_pool::map_unordered, as they complete.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
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
/// Thread safety: completions may run on another thread than the consumer
/// (the first window's run on the executor given to the constructor); they
/// touch the consumer's timer only through its executor. A consumer on a
/// multi-threaded io_context uses a strand.
template <class R>
class result_stream {
 public:
  /// `launch(i, ex, done)` submits item i and calls done(error, value) on `ex`.
  using completion = std::function<void(std::exception_ptr, R)>;
  using launcher = std::function<void(std::size_t, const asio::any_io_executor&, completion)>;

  /// Without `start_on`, nothing is launched before the first next(); with
  /// it, the first `window` items are launched now, completing on `start_on`.
  result_stream(launcher launch, std::size_t total, std::size_t window,
                std::optional<asio::any_io_executor> start_on = std::nullopt)
      : state_(std::make_shared<state>()) {
    state_->launch = std::move(launch);
    state_->total = total;
    state_->window = window == 0 ? 1 : window;
    if (start_on) {
      std::lock_guard lock(state_->mutex);
      top_up(state_, *start_on);
    }
  }

  /// The next completed item, or std::nullopt when every item was yielded.
  asio::awaitable<std::optional<indexed_result<R>>> next() {
    auto st = state_;
    auto ex = co_await asio::this_coro::executor;
    for (;;) {
      {
        std::lock_guard lock(st->mutex);
        if (!st->wake) {
          st->wake.emplace(ex, asio::steady_timer::time_point::max());
        }
        top_up(st, ex);
        if (!st->ready.empty()) {
          indexed_result<R> r = std::move(st->ready.front());
          st->ready.pop_front();
          co_return r;
        }
        if (st->in_flight == 0 && st->next_index == st->total) {
          co_return std::nullopt;
        }
        st->wake->expires_at(asio::steady_timer::time_point::max());
      }
      // A completion after the check posts its wake-up to this executor: it
      // runs once this coroutine is suspended in the wait, never before.
      std::error_code ec;
      co_await st->wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  /// Items not yet yielded (in flight, ready, or not started).
  std::size_t remaining() const {
    std::lock_guard lock(state_->mutex);
    return state_->total - state_->next_index + state_->in_flight + state_->ready.size();
  }

 private:
  struct state {
    std::mutex mutex;  // completions may run on the pool's executor
    launcher launch;
    std::size_t total = 0;
    std::size_t window = 1;
    std::size_t next_index = 0;
    std::size_t in_flight = 0;
    std::deque<indexed_result<R>> ready;
    std::optional<asio::steady_timer> wake;  // the consumer's, made by its first next()
  };

  // Called with st->mutex held. `launch` only initiates: completions are
  // never invoked from inside it, so they cannot take the mutex re-entrantly.
  static void top_up(const std::shared_ptr<state>& st, const asio::any_io_executor& ex) {
    while (st->in_flight < st->window && st->next_index < st->total) {
      std::size_t i = st->next_index++;
      ++st->in_flight;
      std::weak_ptr<state> weak = st;
      st->launch(i, ex, [weak, i](std::exception_ptr e, R v) {
        auto s = weak.lock();
        if (!s) {
          return;
        }
        std::lock_guard lock(s->mutex);
        --s->in_flight;
        s->ready.push_back({i, e, std::move(v)});
        if (s->wake) {
          asio::post(s->wake->get_executor(), [weak] {
            if (auto alive = weak.lock()) {
              alive->wake->cancel();
            }
          });
        }
      });
    }
  }

  std::shared_ptr<state> state_;
};

}  // namespace coproc
