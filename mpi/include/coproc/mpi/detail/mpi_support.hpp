#pragma once
// mpi_pool's machinery: task ids, cancellation, the image checks, the handler
// wrapper and map's chunk task on a rank.

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/awaitable_operators.hpp>
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
#include "coproc/mpi/mpi_options.hpp"

namespace coproc::detail {

/// A fresh task id (process-wide, never reused, so a late result of a task
/// from an earlier pool can never be taken for another task).
std::uint64_t mpi_next_id() noexcept;
/// Cancels task `id` of the open mpi_pool (no effect when it already finished).
void mpi_cancel(std::uint64_t id);
/// Whether `p` lies in an executable segment of the main program: only such
/// code has the same offset from image_anchor in every rank.
bool mpi_code_in_image(const void* p) noexcept;
/// image_anchor's offset from the start of the main program's first code segment.
std::int64_t mpi_anchor_offset() noexcept;
/// The GNU build id of this process's executable, as hex.
const std::string& mpi_build_id();

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
    if (!mpi_code_in_image(code_address(wire))) {
      throw std::system_error(coproc::errc::function_mismatch,
                              "mpi_pool: map's function is outside the executable");
    }
  }
  return map_chunk<F, T>(std::move(wire), std::move(items));
}

}  // namespace coproc::detail
