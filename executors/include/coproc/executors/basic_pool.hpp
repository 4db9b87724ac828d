#pragma once
/// coproc::basic_pool: the one public front of every pool (submit, map,
/// shutdown, stats), written once over a backend that runs the tasks.

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/emitted_type.hpp"
#include "coproc/executors/detail/input_items.hpp"
#include "coproc/executors/detail/pool_algorithms.hpp"
#include "coproc/executors/detail/submit_support.hpp"
#include "coproc/executors/detail/task_checks.hpp"
#include "coproc/executors/pool_stats.hpp"
#include "coproc/executors/result_stream.hpp"
#include "coproc/executors/retry_policy.hpp"
#include "coproc/executors/task_stream.hpp"

namespace coproc {

/// How async_shutdown treats work that is queued or running.
enum class shutdown_mode {
  drain,   ///< finish every accepted task, then stop the workers
  cancel,  ///< fail queued and running tasks with errc::pool_stopped, then stop
};

/// The front every pool shares: process_pool (forked workers on this host)
/// and mpi_pool (the ranks of an MPI job) are basic_pool over their backend
/// and add only constructors. What differs between them (what cancelling a
/// running task does, which options apply) is said in their class comments.
///
/// A Backend (coproc::detail) provides: `submit(ex, retry, fn,
/// std::tuple<args...>, handler)`, which creates the task's operation (with
/// the call's std::optional<retry_policy>) and starts it;
/// `shutdown(mode, done)`; `stats()`; `size()`; `chunk_task<F, T>`, the
/// function that runs one chunk of a map; `deadline_message`, submit_for's
/// timeout text; and `streams_start_at_once` (map_unordered submits its
/// first window before the first next()).
///
/// Thread safety: every member function may be called from any thread. The
/// pool must outlive the operations it started; destroying it completes them
/// with asio::error::operation_aborted.
template <class Backend>
class basic_pool {
 public:
  using executor_type = asio::any_io_executor;

  basic_pool(const basic_pool&) = delete;
  basic_pool& operator=(const basic_pool&) = delete;

  executor_type get_executor() const noexcept { return ex_; }

  /// Runs `fn(args...)` in a worker: `async_submit(fn, args..., token)`.
  ///
  /// Completion signature: void(std::exception_ptr, R), or void(std::exception_ptr)
  /// when R is void. The exception is the task's own: a standard exception type
  /// (std::out_of_range, std::system_error of any category, ...) arrives as
  /// itself, any other type as coproc::remote_error naming it (see
  /// coproc::to_exception_ptr). Or a std::system_error with errc::task_timeout,
  /// errc::pool_stopped, errc::pool_broken, errc::payload_too_large,
  /// errc::frame_corrupt, errc::function_mismatch (code outside the main
  /// executable where a separate exec runs the task), what an argument's
  /// encoding threw (a cereal save(): that task alone fails), or a
  /// coproc::worker_crashed_error (errc::worker_crashed; status() holds the
  /// signal or exit status and max RSS).
  /// Cancellation: terminal, partial and total. A queued task is dropped; a
  /// running task is stopped as its pool can (process_pool: its worker is
  /// killed and replaced; mpi_pool: it runs to its end on its rank and the
  /// result is discarded). The handler gets asio::error::operation_aborted.
  /// With pool_options::stop_grace > 0, process_pool first asks a running
  /// task to stop (coproc::this_task::stop_requested()) and kills its worker
  /// only if it has not returned within the grace; the handler then gets a
  /// coproc::task_stopped_error (code operation_aborted, or task_timeout past
  /// task_timeout or submit_for's deadline) holding the task's value or
  /// exception if it returned in time, and a worker that returned lives on.
  /// Waiting: pool_options::task_timeout bounds a running task,
  /// pool_options::start_timeout the wait for a worker to start; a pool that
  /// can no longer start workers fails its tasks with errc::pool_broken.
  /// Callables: functions, member pointers (the object is the first argument,
  /// as for std::invoke), captureless lambdas, stateless function objects and
  /// declared task objects (coproc/executors/task_object.hpp). Lambdas with
  /// captures are refused at compile time: pass the data as arguments.
  /// Arguments and results: any coproc::codable type.
  /// Retries: a task whose worker crashed fails, unless pool_options::retries
  /// (or the call's retry_policy, below) says to run it again.
  template <class F, class... Ts>
  requires(!std::is_same_v<F, retry_policy>) auto async_submit(F fn, Ts&&... args_and_token) {
    static_assert(sizeof...(Ts) >= 1, "coproc: async_submit takes a completion token last");
    return async_submit_split(std::nullopt, std::move(fn), std::forward<Ts>(args_and_token)...);
  }

  /// async_submit with the call's own retries, overriding pool_options::retries
  /// and retry_timeouts: `async_submit(coproc::retry_policy{.retries = 3}, fn,
  /// args..., token)`. A task whose worker crashed (a signal, an exit of its
  /// own, an rlimit, the OOM killer; past task_timeout only with
  /// `policy.on_timeout`) runs again from its start in another worker, up to
  /// `policy.retries` times; if every attempt fails, the error is the last
  /// one's (coproc::worker_crashed_error, whose attempts() and message give
  /// every attempt's). Only for idempotent tasks: the caller opts in knowing
  /// that a crashed attempt's side effects stay. The task's own exception,
  /// cancellation and shutdown are never retried. Otherwise as async_submit.
  template <class F, class... Ts>
  auto async_submit(retry_policy policy, F fn, Ts&&... args_and_token) {
    static_assert(sizeof...(Ts) >= 1, "coproc: async_submit takes a completion token last");
    return async_submit_split(policy, std::move(fn), std::forward<Ts>(args_and_token)...);
  }

  /// `co_await pool.submit(fn, args...)`: the coroutine form of async_submit.
  template <class F, class... Args>
  requires(!std::is_same_v<F, retry_policy>) auto submit(F fn, Args&&... args) {
    return async_submit(std::move(fn), std::forward<Args>(args)..., asio::use_awaitable);
  }

  /// `co_await pool.submit(coproc::retry_policy{.retries = 3}, fn, args...)`:
  /// submit with the call's own retries (see async_submit(retry_policy, ...)).
  template <class F, class... Args>
  auto submit(retry_policy policy, F fn, Args&&... args) {
    return async_submit(policy, std::move(fn), std::forward<Args>(args)..., asio::use_awaitable);
  }

  /// Like submit(), with a per-call deadline: when the task has not finished
  /// `timeout` after the call, it fails with std::system_error of
  /// errc::task_timeout, and the task is cancelled (see async_submit); with a
  /// stop_grace, it waits for the task to stop and throws a
  /// coproc::task_stopped_error of errc::task_timeout with its outcome.
  template <class F, class... Args>
  auto submit_for(std::chrono::steady_clock::duration timeout, F fn, Args&&... args) {
    return submit_for_values<F, detail::wire_t<Args>...>(timeout, std::move(fn),
                                                         std::forward<Args>(args)...);
  }

  /// Applies `fn` to every element of `items` in the workers and returns the
  /// results in input order. Items travel in chunks (automatic size, or
  /// `chunk_size` when not zero) so that per-task costs are amortised.
  /// Throws the first failing chunk's exception, of its own type, its message
  /// starting with "coproc::map: items [first, last) of n failed: ".
  /// Any input range: the items are copied when map is called, so the range
  /// need not outlive it.
  /// Cancellation: terminal (e.g. `co_await (pool.map(...) || timer)`): the
  /// chunks still out are cancelled as submits are and map throws
  /// std::system_error with asio::error::operation_aborted.
  template <class F, detail::input_items Range>
  auto map(F fn, Range&& items, std::size_t chunk_size = 0) {
    using T = detail::item_t<Range>;
    if constexpr (!detail::check_map_task<F, T>()) {
      return asio::awaitable<std::vector<detail::result_or_int_t<F, T>>>{};
    } else {
      return detail::ordered_map<detail::task_result_t<F, T>>(
          *this, Backend::template chunk_task<F, T>, detail::to_wire(fn),
          detail::collect(std::forward<Range>(items)), chunk_size);
    }
  }

  /// Applies `fn` to every element of `items` and yields results as their
  /// tasks complete: Python's imap_unordered. Items travel in chunks of
  /// `chunk_size` (0: adaptive: one item per task at first, then sized from the
  /// measured time per item so that a task takes about 2 ms, never more than
  /// the items left over the window), at most `window` tasks in flight (0:
  /// twice the worker count). A failed chunk yields its error for each item.
  /// process_pool submits the first `window` tasks at once, before the first
  /// next(); mpi_pool at the first next().
  /// `while (auto r = co_await s.next()) { r->index; r->get(); }`; for many
  /// tiny items, drain what is buffered without a co_await each:
  /// `while (auto r = co_await s.next()) { do use(*r); while ((r = s.try_next())); }`
  template <class F, detail::input_items Range>
  auto map_unordered(F fn, Range&& items, std::size_t window = 0, std::size_t chunk_size = 0) {
    using T = detail::item_t<Range>;
    if constexpr (!detail::check_map_task<F, T>()) {
      return result_stream<detail::result_or_int_t<F, T>>(nullptr, 0, 0);
    } else {
      std::optional<asio::any_io_executor> start_on;
      if constexpr (Backend::streams_start_at_once) {
        start_on = ex_;
      }
      return detail::unordered_map<detail::task_result_t<F, T>>(
          *this, Backend::template chunk_task<F, T>, detail::to_wire(fn),
          detail::collect(std::forward<Range>(items)), window, chunk_size, std::move(start_on));
    }
  }

  /// Runs a streaming task: `fn(out, args...)` in a worker, where fn's first
  /// parameter is `coproc::emitter<T>&` (T is read from it), and returns the
  /// coproc::task_stream<T> its values arrive through while it runs:
  ///
  ///     void scan(coproc::emitter<match>& out, std::string path);
  ///     auto s = pool.stream(scan, path);
  ///     while (auto m = co_await s.next()) use(*m);
  ///
  /// The task starts now, as a submitted one does (same queue, options,
  /// timeout and errors, which next() throws after the values emitted before
  /// them). Its emitter blocks while pool_options::stream_buffer values are
  /// unread. Destroying the stream, or cancelling a waiting next(), cancels
  /// the task. fn: a function or a captureless lambda (parameters not
  /// `auto`) returning void. process_pool only: an mpi_pool does not stream.
  /// A streaming task is never retried (its reader saw the values of the
  /// attempt that crashed).
  template <class F, class... Args>
  auto stream(F fn, Args&&... args) {
    using T = detail::emitted_t<F>;
    if constexpr (!Backend::runs_streaming_tasks) {
      static_assert(detail::always_false<F>,
                    "coproc: mpi_pool does not run streaming tasks; use a process_pool, or "
                    "return the values as a std::vector");
      return task_stream<int>{};
    } else if constexpr (!detail::check_stream_task<F, detail::wire_t<Args>...>()) {
      return task_stream<std::conditional_t<std::is_void_v<T>, int, T>>{};
    } else {
      return backend_.template stream<T>(
          ex_, std::move(fn), std::tuple<detail::wire_t<Args>...>(std::forward<Args>(args)...));
    }
  }

  /// Stops accepting work, then drains or cancels what was accepted, then
  /// stops the workers.
  /// Completion signature: void(). Every call's handler completes once the
  /// pool has stopped (a call after that completes at once). Later submits
  /// fail with errc::pool_stopped.
  ///
  /// A drain has no deadline: it waits for every accepted task (replacing
  /// workers that retire or crash meanwhile), however long they run. A later
  /// `cancel` call fails what is left, so a bounded drain is written:
  ///
  ///     asio::steady_timer grace(ex, std::chrono::seconds(5));
  ///     pool.async_shutdown(shutdown_mode::drain, [&] { grace.cancel(); });
  ///     std::error_code ec;  // operation_aborted: drained within the grace period
  ///     co_await grace.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  ///     // Fails what the drain left (nothing if it finished); completes once stopped.
  ///     co_await pool.async_shutdown(shutdown_mode::cancel, asio::use_awaitable);
  ///
  /// async_shutdown ignores cancellation slots: `shutdown || timer` would wait
  /// for the drain all the same (an awaitable operator waits for both).
  template <class Token>
  auto async_shutdown(shutdown_mode mode, Token&& token) {
    return asio::async_initiate<Token, void()>(
        [this, mode](auto handler) {
          auto ex = asio::get_associated_executor(handler, ex_);
          auto shared = std::make_shared<std::decay_t<decltype(handler)>>(std::move(handler));
          auto work = std::make_shared<asio::executor_work_guard<decltype(ex)>>(ex);
          backend_.shutdown(mode, [shared, work, ex]() mutable {
            asio::post(ex, [shared]() mutable { std::move (*shared)(); });
            work->reset();
          });
        },
        token);
  }

  /// A snapshot of the pool's counters, true whenever it is taken.
  pool_stats stats() const { return backend_.stats(); }

  /// The number of workers the pool keeps (process_pool: worker processes;
  /// mpi_pool: worker ranks).
  std::size_t size() const noexcept { return backend_.size(); }

 protected:
  /// `backend_args` construct the backend after the executor.
  template <class... A>
  explicit basic_pool(const executor_type& ex, A&&... backend_args)
      : ex_(ex), backend_(ex, std::forward<A>(backend_args)...) {}
  ~basic_pool() = default;

 private:
  // Splits the arguments from the token, which comes last.
  template <class F, class... Ts>
  auto async_submit_split(std::optional<retry_policy> retry, F fn, Ts&&... args_and_token) {
    return async_submit_tuple(
        retry, std::move(fn),
        detail::all_but_last(std::make_index_sequence<sizeof...(Ts) - 1>{},
                             std::forward<Ts>(args_and_token)...),
        std::forward<decltype(detail::last_of(std::forward<Ts>(args_and_token)...))>(
            detail::last_of(std::forward<Ts>(args_and_token)...)));
  }

  template <class F, class Args, class Token>
  auto async_submit_tuple(std::optional<retry_policy> retry, F fn, Args args, Token&& token) {
    return std::apply(
        [&]<class... A>(A&&... a) {
          using tuple_t = std::tuple<std::decay_t<A>...>;
          return [&]<class... W>(std::tuple<W...>*) {
            if constexpr (!detail::check_task<F, W...>()) {
              // The check reported the mistake; a placeholder keeps the
              // caller's code compiling so that it is the only error.
              return asio::async_initiate<Token, void(std::exception_ptr,
                                                      detail::result_or_int_t<F, W...>)>(
                  [](auto&&...) {}, token);
            } else {
              return asio::async_initiate<Token, detail::submit_signature<F, W...>>(
                  [this, retry](auto handler, F f, tuple_t task_args) {
                    backend_.submit(ex_, retry, std::move(f), std::move(task_args),
                                    std::move(handler));
                  },
                  token, std::move(fn), tuple_t(std::forward<A>(a)...));
            }
          }(static_cast<tuple_t*>(nullptr));
        },
        std::move(args));
  }

  template <class F, class... W>
  auto submit_for_values(std::chrono::steady_clock::duration timeout, F fn, W... args) {
    if constexpr (!detail::check_task<F, W...>()) {
      return asio::awaitable<detail::result_or_int_t<F, W...>>{};  // the check reported it
    } else {
      // The loser of the race is cancelled, as async_submit says.
      return detail::submit_within(*this, timeout, Backend::deadline_message, std::move(fn),
                                   std::move(args)...);
    }
  }

  executor_type ex_;
  Backend backend_;
};

}  // namespace coproc
