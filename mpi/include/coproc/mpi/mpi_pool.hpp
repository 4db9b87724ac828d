#pragma once
/// coproc::mpi_pool: the process_pool interface over the ranks of an MPI job.
///
/// Rank 0 runs the program's event loop and submits; every other rank runs
/// the worker loop of the same binary. Tasks name their code by its offset
/// from detail::image_anchor, checked at start-up against the GNU build id of
/// each rank's executable, so separate execs (ASLR) of one build agree.

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/task_checks.hpp"
#include "coproc/executors/detail/task_op.hpp"
#include "coproc/executors/pool_options.hpp"
#include "coproc/executors/pool_stats.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/executors/result_stream.hpp"
#include "coproc/mpi/detail/mpi_support.hpp"
#include "coproc/mpi/mpi_options.hpp"

namespace coproc {

/// The process_pool interface (submit, async_submit, map, map_unordered,
/// async_shutdown, stats) over the ranks of an MPI job: rank 0 submits, ranks
/// 1..N-1 run the tasks. See docs/SCALE_OUT.md.
///
/// Start-up. MPI is initialised by run_workers_if_not_root(argc, argv) or, if
/// the program did not call it, by the first mpi_pool constructor. On every
/// rank but 0 that call never returns: the rank serves tasks until rank 0
/// exits, then finalises MPI and leaves with std::exit(0). Everything the
/// program did before it ran on every rank, so call it first thing in main().
/// All MPI calls of rank 0 are made by one progress thread (MPI_THREAD_FUNNELED
/// is enough); MPI is finalised when rank 0 exits (std::atexit).
///
/// One mpi_pool may be open at a time (the worker ranks serve one session);
/// pools may follow one another.
///
/// Callables: as for process_pool, but a function pointer must point into
/// the main executable (not a shared library): its offset is what travels.
/// A declared task object travels through the codec (its members are values).
///
/// Options: the constructor takes process_pool's coproc::pool_options, so a
/// program switches executors by changing the type it constructs. Applied:
/// queue_capacity (a full queue on rank 0 defers further submits: they count
/// as stats().tasks_waiting), task_timeout (measured from when the task
/// becomes the oldest on its rank, i.e. starts running there), initializer
/// (run on every worker rank when the pool opens; it must be a plain function
/// pointer, `+[] {...}` for a captureless lambda, because a closure cannot
/// travel to another exec), max_payload (arguments and results). Not
/// applicable to ranks, ignored: workers (the job's size decides: mpirun -np),
/// start_method (mpirun starts the ranks), max_tasks_per_worker and
/// max_worker_rss (both recycle a worker, and a rank cannot be replaced: Open
/// MPI 4.1 has no way to respawn a rank into MPI_COMM_WORLD), limits and
/// ring_bytes (a rank outlives the pool and serves later pools; there are no
/// rings, MPI messages carry the tasks).
///
/// Thread safety: every member function may be called from any thread.
/// The pool must outlive the operations it started; destroying it completes
/// them with asio::error::operation_aborted.
class mpi_pool {
 public:
  using executor_type = asio::any_io_executor;

  /// Initialises MPI (if not yet done). On rank 0 returns; on the other
  /// ranks runs the worker loop and leaves the process with std::exit(0)
  /// once rank 0 finishes (or with a non-zero status on a fatal MPI error).
  /// Throws std::system_error if MPI cannot be initialised.
  static void run_workers_if_not_root(int& argc, char**& argv);
  /// This process's rank in MPI_COMM_WORLD (initialises MPI if needed; a
  /// worker rank never returns from that initialisation).
  static int rank();

  /// Opens a session with every worker rank: sends the build id and waits
  /// for each rank to confirm it runs the same build.
  /// `options` as for process_pool (see the class comment for what applies
  /// to ranks); `mpi` holds what only MPI has.
  /// Throws std::system_error: errc::function_mismatch when a rank runs
  /// another build (that rank then refuses every task) or the initializer is
  /// not a function of the main executable, errc::worker_crashed when the
  /// initializer threw on a rank (naming the rank and the message),
  /// errc::pool_stopped when the job has a single rank or another mpi_pool
  /// is open.
  explicit mpi_pool(const executor_type& ex, pool_options options = {}, mpi_options mpi = {});
  /// The same on `ctx`'s executor.
  explicit mpi_pool(asio::io_context& ctx, pool_options options = {}, mpi_options mpi = {})
      : mpi_pool(executor_type(ctx.get_executor()), std::move(options), std::move(mpi)) {}
  mpi_pool(const mpi_pool&) = delete;
  mpi_pool& operator=(const mpi_pool&) = delete;
  /// Closes the session: pending operations complete with
  /// asio::error::operation_aborted; tasks running on ranks finish there and
  /// their results are discarded.
  ~mpi_pool();

  executor_type get_executor() const noexcept { return ex_; }

  /// Runs `fn(args...)` on a worker rank: `async_submit(fn, args..., token)`.
  ///
  /// Completion signature: void(std::exception_ptr, R), or void(std::exception_ptr)
  /// when R is void. The exception is the task's own as coproc::remote_error
  /// (or std::system_error with its code when the task threw one), or a
  /// std::system_error with errc::pool_stopped, errc::payload_too_large (above
  /// 2 GiB, MPI's count limit), errc::function_mismatch, errc::frame_corrupt,
  /// errc::worker_crashed (an MPI error towards the rank), errc::task_timeout
  /// (pool_options::task_timeout passed: the rank finishes the task, its
  /// result is discarded, and the rank's next task waits for it).
  /// Cancellation: terminal, partial and total. A task not yet sent to a rank
  /// is dropped; a task already sent keeps running on its rank (a rank cannot
  /// be killed and replaced) and its result is discarded. Either way the
  /// handler gets asio::error::operation_aborted at once.
  template <class F, class... Ts>
  auto async_submit(F fn, Ts&&... args_and_token) {
    static_assert(sizeof...(Ts) >= 1, "coproc: async_submit takes a completion token last");
    return async_submit_tuple(
        std::move(fn),
        detail::all_but_last(std::make_index_sequence<sizeof...(Ts) - 1>{},
                             std::forward<Ts>(args_and_token)...),
        std::forward<decltype(detail::last_of(std::forward<Ts>(args_and_token)...))>(
            detail::last_of(std::forward<Ts>(args_and_token)...)));
  }

  /// `co_await pool.submit(fn, args...)`: the coroutine form of async_submit.
  template <class F, class... Args>
  auto submit(F fn, Args&&... args) {
    return async_submit(std::move(fn), std::forward<Args>(args)..., asio::use_awaitable);
  }

  /// Like submit(), with a per-call deadline: when the task has not finished
  /// `timeout` after the call, it fails with std::system_error of
  /// errc::task_timeout (a task already on a rank runs to its end there and
  /// its result is discarded).
  template <class F, class... Args>
  auto submit_for(std::chrono::steady_clock::duration timeout, F fn, Args&&... args) {
    return submit_for_values<F, detail::wire_t<Args>...>(timeout, std::move(fn),
                                                         std::forward<Args>(args)...);
  }

  /// Applies `fn` to every element of `items` on the ranks and returns the
  /// results in input order, in chunks (automatic size, or `chunk_size`).
  /// Throws the first failing chunk's exception, of its own type, its message
  /// starting with "coproc::map: items [first, last) of n failed: ".
  template <class F, std::ranges::input_range Range>
  auto map(F fn, const Range& items, std::size_t chunk_size = 0);

  /// Chunks of items (`chunk_size`, 0: adaptive), at most `window` tasks in
  /// flight (0: twice the rank count), results as they complete: see
  /// process_pool::map_unordered.
  template <class F, std::ranges::input_range Range>
  auto map_unordered(F fn, const Range& items, std::size_t window = 0, std::size_t chunk_size = 0);

  /// Stops accepting work, then drains or cancels (shutdown_mode::cancel:
  /// queued and sent tasks fail with errc::pool_stopped; ranks finish what
  /// they run and the results are discarded). Completion signature: void().
  /// The worker ranks stay up for a later pool until rank 0 exits.
  template <class Token>
  auto async_shutdown(shutdown_mode mode, Token&& token);

  /// A snapshot of the counters. worker_pids are the ranks' pids on their
  /// own hosts; workers_alive is the number of worker ranks; respawns stays 0.
  pool_stats stats() const;

  /// The number of worker ranks (MPI_COMM_WORLD size - 1).
  std::size_t size() const noexcept { return workers_; }

 private:
  template <class F, class Args, class Token>
  auto async_submit_tuple(F fn, Args args, Token&& token);

  template <class F, class... W>
  auto submit_for_values(std::chrono::steady_clock::duration timeout, F fn, W... args);

  void start(detail::task_op* op);
  void start_shutdown(shutdown_mode mode, std::function<void()> done);

  executor_type ex_;
  std::size_t workers_ = 0;
};

template <class F, class Args, class Token>
auto mpi_pool::async_submit_tuple(F fn, Args args, Token&& token) {
  return std::apply(
      [&]<class... A>(A&&... a) {
        using tuple_t = std::tuple<std::decay_t<A>...>;
        return [&]<class... W>(std::tuple<W...>*) {
          if constexpr (!detail::check_task<F, W...>()) {
            return asio::async_initiate<Token,
                                        void(std::exception_ptr, detail::result_or_int_t<F, W...>)>(
                [](auto&&...) {}, token);  // the check reported the mistake
          } else {
            return asio::async_initiate<Token, detail::submit_signature<F, W...>>(
                [this](auto handler, F f, tuple_t task_args) {
                  using handler_t = std::decay_t<decltype(handler)>;
                  using op_t = detail::submit_op<F, detail::mpi_handler<handler_t>, W...>;
                  auto slot = asio::get_associated_cancellation_slot(handler);
                  bool code_ok = true;
                  if constexpr (detail::function_pointer<F>) {
                    code_ok = detail::mpi_code_in_image(reinterpret_cast<const void*>(f));
                  } else if constexpr (detail::member_function_pointer<F>) {
                    auto w = detail::to_wire(f);
                    code_ok =
                        w.is_address == 0 || detail::mpi_code_in_image(detail::code_address(w.ptr));
                  }
                  auto* op = new op_t(ex_, std::move(f), std::move(task_args),
                                      detail::mpi_handler<handler_t>(std::move(handler), ex_));
                  op->id = detail::mpi_next_id();
                  if (!code_ok) {
                    op->fail(std::make_exception_ptr(
                        std::system_error(coproc::errc::function_mismatch,
                                          "mpi_pool: the function is not in the main executable")));
                    return;
                  }
                  if (slot.is_connected()) {
                    slot.assign([id = op->id](asio::cancellation_type) { detail::mpi_cancel(id); });
                  }
                  start(op);
                },
                token, std::move(fn), tuple_t(std::forward<A>(a)...));
          }
        }(static_cast<tuple_t*>(nullptr));
      },
      std::move(args));
}

template <class F, class... W>
auto mpi_pool::submit_for_values(std::chrono::steady_clock::duration timeout, F fn, W... args) {
  if constexpr (!detail::check_task<F, W...>()) {
    return asio::awaitable<detail::result_or_int_t<F, W...>>{};  // the check reported it
  } else {
    // The loser of the race is cancelled: a queued task is dropped, a sent
    // task's result discarded.
    return detail::submit_within(*this, timeout, "mpi_pool: per-call deadline passed",
                                 std::move(fn), std::move(args)...);
  }
}

// map and map_unordered are process_pool's (detail/pool_algorithms.hpp) with the MPI chunk task.
template <class F, std::ranges::input_range Range>
auto mpi_pool::map(F fn, const Range& items, std::size_t chunk_size) {
  using T = std::ranges::range_value_t<Range>;
  if constexpr (!detail::check_map_task<F, T>()) {
    return asio::awaitable<std::vector<detail::result_or_int_t<F, T>>>{};
  } else {
    return detail::ordered_map<detail::task_result_t<F, T>>(
        *this, &detail::mpi_map_chunk<F, T>, detail::to_wire(fn),
        std::vector<T>(std::ranges::begin(items), std::ranges::end(items)), chunk_size);
  }
}

template <class F, std::ranges::input_range Range>
auto mpi_pool::map_unordered(F fn, const Range& items, std::size_t window, std::size_t chunk_size) {
  using T = std::ranges::range_value_t<Range>;
  if constexpr (!detail::check_map_task<F, T>()) {
    return result_stream<detail::result_or_int_t<F, T>>(nullptr, 0, 0);
  } else {
    return detail::unordered_map<detail::task_result_t<F, T>>(
        *this, &detail::mpi_map_chunk<F, T>, detail::to_wire(fn),
        std::vector<T>(std::ranges::begin(items), std::ranges::end(items)), window, chunk_size);
  }
}

template <class Token>
auto mpi_pool::async_shutdown(shutdown_mode mode, Token&& token) {
  return asio::async_initiate<Token, void()>(
      [this, mode](auto handler) {
        auto ex = asio::get_associated_executor(handler, ex_);
        auto shared = std::make_shared<std::decay_t<decltype(handler)>>(std::move(handler));
        auto work = std::make_shared<asio::executor_work_guard<decltype(ex)>>(ex);
        start_shutdown(mode, [shared, work, ex]() mutable {
          asio::post(ex, [shared]() mutable { std::move (*shared)(); });
          work->reset();
        });
      },
      token);
}

}  // namespace coproc
