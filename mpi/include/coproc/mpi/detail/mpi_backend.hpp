#pragma once
// mpi_pool's backend under basic_pool: the ranks of an MPI job, driven by one
// progress thread on rank 0 (mpi/src/mpi_pool.cpp); with its task ids,
// cancellation, handler wrapper and map's chunk task on a rank.

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "coproc/executors/basic_pool.hpp"
#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/submit_support.hpp"
#include "coproc/executors/detail/task_op.hpp"
#include "coproc/executors/pool_options.hpp"
#include "coproc/executors/pool_stats.hpp"
#include "coproc/executors/retry_policy.hpp"
#include "coproc/mpi/mpi_options.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {

/// A fresh task id (process-wide, never reused, so a late result of a task
/// from an earlier pool can never be taken for another task).
std::uint64_t mpi_next_id() noexcept;
/// Cancels task `id` of the open mpi_pool (no effect when it already finished).
void mpi_cancel(std::uint64_t id);

/// Wraps a submit handler so that the pool, not submit_op, owns its
/// cancellation slot: the slot is cleared on the handler's executor just
/// before the handler runs.
template <class H>
class mpi_handler {
 public:
  using executor_type = asio::associated_executor_t<H, asio::any_io_executor>;

  mpi_handler(H h, const asio::any_io_executor& ex)
      : ex_(asio::get_associated_executor(h, ex)),
        slot_(asio::get_associated_cancellation_slot(h)),
        h_(std::move(h)) {}

  executor_type get_executor() const noexcept { return ex_; }

  template <class... A>
  void operator()(A&&... a) {
    if (slot_.is_connected()) {
      slot_.clear();
    }
    std::move(h_)(std::forward<A>(a)...);
  }

 private:
  executor_type ex_;
  asio::associated_cancellation_slot_t<H> slot_;
  H h_;
};

/// map's chunk task: process_pool's, with the callable's code checked to lie
/// in the main executable when it is a function pointer (only such code has
/// the same offset from image_anchor in every rank).
template <class F, class T>
std::vector<task_result_t<F, T>> mpi_map_chunk(callable_wire_t<F> wire, std::vector<T> items) {
  if constexpr (function_pointer<F>) {
    if (!in_main_program(code_address(wire))) {
      throw std::system_error(coproc::errc::function_mismatch,
                              "mpi_pool: map's function is outside the executable");
    }
  }
  return map_chunk<F, T>(std::move(wire), std::move(items));
}

/// Whether the code a callable names lies in the main executable: only such
/// code has the same offset from image_anchor in every rank.
template <class F>
bool mpi_code_crosses(const F& f) {
  if constexpr (function_pointer<F>) {
    return in_main_program(reinterpret_cast<const void*>(f));
  } else if constexpr (member_function_pointer<F>) {
    auto w = to_wire(f);
    return w.is_address == 0 || in_main_program(code_address(w.ptr));
  } else {
    return true;
  }
}

class mpi_backend {
 public:
  static constexpr const char* deadline_message = "mpi_pool: per-call deadline passed";
  static constexpr bool streams_start_at_once = false;
  static constexpr bool runs_streaming_tasks = false;  // a rank would have to relay each value
  template <class F, class T>
  static constexpr auto chunk_task = &mpi_map_chunk<F, T>;

  /// Opens a session with every worker rank (see mpi_pool's constructor).
  mpi_backend(const asio::any_io_executor& ex, const pool_options& options, const mpi_options& mpi);
  /// Closes the session: pending operations complete with operation_aborted.
  ~mpi_backend();
  mpi_backend(const mpi_backend&) = delete;
  mpi_backend& operator=(const mpi_backend&) = delete;

  /// The typed operation; the pool, not submit_op, owns the handler's
  /// cancellation slot (mpi_handler), since a sent task cannot be withdrawn.
  /// `retry`, the call's own policy, travels with the task to its rank, whose
  /// process_pool retries it there (else the rank's pool_options apply).
  template <class F, class Handler, class... W>
  void submit(const asio::any_io_executor& ex, std::optional<retry_policy> retry, F f,
              std::tuple<W...> args, Handler handler) {
    using op_t = submit_op<F, mpi_handler<Handler>, W...>;
    auto slot = asio::get_associated_cancellation_slot(handler);
    const bool code_ok = mpi_code_crosses(f);
    auto* op =
        new op_t(ex, std::move(f), std::move(args), mpi_handler<Handler>(std::move(handler), ex));
    op->id = mpi_next_id();
    op->retry = retry;
    if (!code_ok) {
      op->fail(std::make_exception_ptr(
          std::system_error(coproc::errc::function_mismatch,
                            "mpi_pool: the function is not in the main executable")));
      return;
    }
    if (slot.is_connected()) {
      slot.assign([id = op->id](asio::cancellation_type) { mpi_cancel(id); });
    }
    start(op);
  }

  void shutdown(shutdown_mode mode, std::function<void()> done);
  pool_stats stats() const;
  std::size_t size() const noexcept { return workers_; }

 private:
  void start(task_op* op);

  std::size_t workers_ = 0;
};

}  // namespace coproc::detail
