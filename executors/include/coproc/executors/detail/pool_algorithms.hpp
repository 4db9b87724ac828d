#pragma once
// map, map_unordered and submit_for written once for every executor with the
// pool shape: `async_submit(fn, arg, token)` completing with
// void(std::exception_ptr, R) and `size()` (process_pool, mpi_pool).

#include <algorithm>
#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/error.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/input_items.hpp"
#include "coproc/executors/result_stream.hpp"
#include "coproc/executors/task_stopped_error.hpp"
#include "coproc/ipc/detail/exception_prefix.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {

/// The items of any input range, C++20-only iterators and sentinels included
/// (a range that is not a common range, a move-only iterator, a view whose
/// begin() is not const), copied into a vector: a pool encodes them later.
template <input_items Range>
auto collect(Range&& items) {
  std::vector<item_t<Range>> out;
  if constexpr (sized_items<Range>) {
    out.reserve(static_cast<std::size_t>(std::ranges::size(items)));
  }
  for (auto it = std::ranges::begin(items); it != std::ranges::end(items); ++it) {
    out.emplace_back(*it);
  }
  return out;
}

/// submit_for's deadline passed: errc::task_timeout, `what`; a
/// task_stopped_error when the pool asked the task to stop (stop_grace),
/// carrying what it did.
[[noreturn]] inline void throw_deadline(const std::exception_ptr& error, const char* what) {
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const task_stopped_error& stopped) {
      throw task_stopped_error(make_error_code(coproc::errc::task_timeout), what, stopped);
    } catch (...) {
      // Any other ending (the task's own value or error came first): the deadline's error.
    }
  }
  throw std::system_error(coproc::errc::task_timeout, what);
}

/// One task raced against a deadline; the loser is cancelled (what that does
/// to a running task is the pool's: process_pool kills its worker, or with a
/// stop_grace asks the task to stop first; mpi_pool discards the result).
/// Past the deadline: errc::task_timeout, `what` (see throw_deadline).
/// Written by hand rather than with awaitable operators (`submit || timer`),
/// whose header (parallel groups, deferred) every includer of process_pool.hpp
/// paid to compile. The coroutine's own cancellation cancels the task; either
/// way it returns only once the task completed.
template <class Pool, class F, class... W>
asio::awaitable<task_result_t<F, W...>> submit_within(Pool& pool,
                                                      std::chrono::steady_clock::duration timeout,
                                                      const char* what, F fn, W... args) {
  using R = task_result_t<F, W...>;
  struct race {
    race(const asio::any_io_executor& ex, std::chrono::steady_clock::duration t)
        : deadline(ex, t), done(ex, asio::steady_timer::time_point::max()) {}
    asio::steady_timer deadline;
    asio::steady_timer done;  // expires (at once) when the task completed
    asio::cancellation_signal cancel;
    bool finished = false;
    bool timed_out = false;
    std::exception_ptr error;
    std::optional<std::conditional_t<std::is_void_v<R>, char, R>> value;
  };
  auto ex = co_await asio::this_coro::executor;
  auto st = std::make_shared<race>(ex, timeout);
  st->deadline.async_wait([st](std::error_code ec) {
    if (!ec && !st->finished) {
      st->timed_out = true;
      st->cancel.emit(asio::cancellation_type::terminal);
    }
  });
  pool.async_submit(
      std::move(fn), std::move(args)...,
      asio::bind_cancellation_slot(st->cancel.slot(),
                                   asio::bind_executor(ex, [st](std::exception_ptr e, auto&&... v) {
                                     st->finished = true;
                                     st->error = e;
                                     (st->value.emplace(std::forward<decltype(v)>(v)), ...);
                                     st->deadline.cancel();
                                     st->done.expires_at(asio::steady_timer::time_point::min());
                                   })));
  while (!st->finished) {
    std::error_code ec;
    co_await st->done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!st->finished) {  // this coroutine was cancelled: so is the task
      st->cancel.emit(asio::cancellation_type::terminal);
    }
  }
  if (st->timed_out) {
    throw_deadline(st->error, what);
  }
  if (st->error) {
    std::rethrow_exception(st->error);
  }
  if constexpr (!std::is_void_v<R>) {
    co_return std::move(*st->value);
  }
}

/// Submits `items` in chunks (`chunk_task(head, std::vector<T>)` runs over
/// one; `head` is the user's callable as it crosses), all at once, and
/// assembles the results in input order. chunk_size 0: about four chunks per
/// worker. Throws the first failing chunk's exception, of its own type, with
/// "coproc::map: items [first, last) of n failed: " in front of its message.
/// Cancelled (terminal, through the awaiting coroutine's slot, e.g. by
/// `map(...) || timer`): every chunk still out is cancelled as a submit is
/// (queued: dropped; running: its worker killed) and the map throws
/// std::system_error(asio::error::operation_aborted).
template <class R, class T, class Pool, class ChunkTask, class Head>
asio::awaitable<std::vector<R>> ordered_map(Pool& pool, ChunkTask chunk_task, Head head,
                                            std::vector<T> all, std::size_t chunk_size) {
  std::size_t n = all.size();
  if (chunk_size == 0) {
    std::size_t target = 4 * pool.size();
    chunk_size = std::max<std::size_t>(1, (n + target - 1) / target);
  }
  // Completions land on this coroutine's executor; the last one wakes it.
  struct chunk_state {
    std::vector<R> values;
    std::exception_ptr error;
  };
  struct map_state {
    explicit map_state(const asio::any_io_executor& ex)
        : ready(ex, asio::steady_timer::time_point::max()) {}
    std::vector<chunk_state> chunks;
    std::size_t outstanding = 0;
    asio::steady_timer ready;
    std::unique_ptr<asio::cancellation_signal[]> cancel;  // one per chunk
  };
  auto here = co_await asio::this_coro::executor;
  auto state = std::make_shared<map_state>(here);
  state->chunks.resize((n + chunk_size - 1) / chunk_size);
  state->outstanding = state->chunks.size();
  state->cancel = std::make_unique<asio::cancellation_signal[]>(state->chunks.size());
  for (std::size_t c = 0; c < state->chunks.size(); ++c) {
    auto first = all.begin() + static_cast<std::ptrdiff_t>(c * chunk_size);
    auto last = all.begin() + static_cast<std::ptrdiff_t>(std::min(n, (c + 1) * chunk_size));
    pool.async_submit(
        chunk_task, head,
        std::vector<T>(std::make_move_iterator(first), std::make_move_iterator(last)),
        asio::bind_cancellation_slot(
            state->cancel[c].slot(),
            asio::bind_executor(here, [state, c](std::exception_ptr e, std::vector<R> v) {
              state->chunks[c] = {std::move(v), e};
              if (--state->outstanding == 0) {
                state->ready.cancel();
              }
            })));
  }
  if (state->outstanding > 0) {
    std::error_code ec;
    co_await state->ready.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (state->outstanding > 0) {
    // Woken with chunks still out: the map itself was cancelled. A chunk
    // that already finished cleared its slot, so this reaches the rest only.
    for (std::size_t c = 0; c < state->chunks.size(); ++c) {
      state->cancel[c].emit(asio::cancellation_type::terminal);
    }
    throw std::system_error(asio::error::operation_aborted, "map cancelled");
  }
  std::vector<R> out;
  out.reserve(n);
  for (std::size_t c = 0; c < state->chunks.size(); ++c) {
    chunk_state& chunk = state->chunks[c];
    if (chunk.error) {
      // Same exception type, its message naming the failed chunk's items.
      std::rethrow_exception(
          with_prefix(chunk.error, "coproc::map: items [" + std::to_string(c * chunk_size) + ", " +
                                       std::to_string(std::min(n, (c + 1) * chunk_size)) + ") of " +
                                       std::to_string(n) + " failed: "));
    }
    std::move(chunk.values.begin(), chunk.values.end(), std::back_inserter(out));
  }
  co_return out;
}

/// Items in chunks (`chunk_task(head, std::vector<T>)`, as ordered_map), at
/// most `window` tasks in flight (0: twice the workers), results yielded as
/// each chunk completes. chunk_size 0: adaptive (see result_stream). With
/// `start_on`, the first window is submitted at once, completing on that
/// executor; without, at the first next().
template <class R, class T, class Pool, class ChunkTask, class Head>
result_stream<R> unordered_map(Pool& pool, ChunkTask chunk_task, Head head, std::vector<T> items,
                               std::size_t window, std::size_t chunk_size,
                               std::optional<asio::any_io_executor> start_on = std::nullopt) {
  auto all = std::make_shared<std::vector<T>>(std::move(items));
  std::size_t total = all->size();
  return result_stream<R>(
      [&pool, chunk_task, head, all](std::size_t first, std::size_t count,
                                     const asio::any_io_executor& ex,
                                     typename result_stream<R>::completion done) {
        auto begin = all->begin() + static_cast<std::ptrdiff_t>(first);
        pool.async_submit(chunk_task, head,
                          std::vector<T>(begin, begin + static_cast<std::ptrdiff_t>(count)),
                          asio::bind_executor(ex, std::move(done)));
      },
      total, window == 0 ? 2 * pool.size() : window, chunk_size, std::move(start_on));
}

}  // namespace coproc::detail
