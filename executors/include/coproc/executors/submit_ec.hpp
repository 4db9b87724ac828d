#pragma once
/// coproc::async_submit_ec: process_pool::async_submit completing with a std::error_code.

#include <exception>
#include <type_traits>
#include <utility>

#include "coproc/executors/detail/submit_ec_support.hpp"
#include "coproc/executors/detail/submit_support.hpp"

namespace coproc {

/// Runs `fn(args...)` in a worker of `pool`, as pool.async_submit does, and
/// completes the Asio way: `async_submit_ec(pool, fn, args..., token)`, or
/// `async_submit_ec(pool, task_exception, fn, args..., token)` to receive the
/// task's own exception.
///
/// Completion signature: void(std::error_code, R), or void(std::error_code)
/// when R is void; R is value-initialised when the code is set. So
/// `asio::redirect_error(asio::use_awaitable, ec)` and
/// `asio::experimental::as_tuple(asio::use_awaitable)` work, and no
/// exception is thrown for a failure of the machinery:
///
///     auto [ec, v] = co_await coproc::async_submit_ec(
///         pool, fn, 3, asio::experimental::as_tuple(asio::use_awaitable));
///     if (ec == coproc::errc::worker_crashed) { /* retry, say */ }
///
/// Codes: errc::worker_crashed, errc::task_timeout, errc::pool_stopped,
/// errc::pool_broken, errc::frame_corrupt, errc::frame_too_large,
/// errc::payload_too_large, errc::function_mismatch, and
/// asio::error::operation_aborted (cancelled, or the pool destroyed). The
/// details a thrown error carried (a worker_crashed_error's status(), a
/// task_stopped_error's outcome, the message) are not kept: use
/// async_submit for them.
///
/// The task's own exception gives errc::task_raised, and the exception itself
/// (a standard type as itself, any other as coproc::remote_error) is stored
/// into `task_exception` when that argument is given. Why not rethrow it:
/// Asio's error-code operations never throw, and a completion handler has
/// nowhere to throw to; an error code is what redirect_error and as_tuple
/// expect for every failure, and "the task threw" is one, while its object
/// travels beside it, as Asio-based libraries hand diagnostics over
/// (Boost.MySQL's `diagnostics&`). A task that itself throws a
/// std::system_error with one of the codes above is reported as that code
/// (what it said), not as task_raised.
///
/// Cancellation: as async_submit (terminal, partial and total; a queued task
/// is dropped, a running task's worker is killed and replaced):
/// asio::error::operation_aborted.
/// Thread safety: as async_submit (any thread). `task_exception` must stay
/// valid until the completion; it is written on the handler's executor just
/// before the handler runs.
template <class Pool, class F, class... Ts>
requires(!std::is_same_v<std::remove_cvref_t<F>, std::exception_ptr>) auto async_submit_ec(
    Pool& pool, F fn, Ts&&... args_and_token) {
  static_assert(sizeof...(Ts) >= 1, "coproc: async_submit_ec takes a completion token last");
  return detail::async_submit_ec_tuple(
      pool, nullptr, std::move(fn),
      detail::all_but_last(std::make_index_sequence<sizeof...(Ts) - 1>{},
                           std::forward<Ts>(args_and_token)...),
      std::forward<decltype(detail::last_of(std::forward<Ts>(args_and_token)...))>(
          detail::last_of(std::forward<Ts>(args_and_token)...)));
}

/// The same, storing the task's own exception into `task_exception` when the
/// code is errc::task_raised (left untouched otherwise).
template <class Pool, class F, class... Ts>
auto async_submit_ec(Pool& pool, std::exception_ptr& task_exception, F fn, Ts&&... args_and_token) {
  static_assert(sizeof...(Ts) >= 1, "coproc: async_submit_ec takes a completion token last");
  return detail::async_submit_ec_tuple(
      pool, &task_exception, std::move(fn),
      detail::all_but_last(std::make_index_sequence<sizeof...(Ts) - 1>{},
                           std::forward<Ts>(args_and_token)...),
      std::forward<decltype(detail::last_of(std::forward<Ts>(args_and_token)...))>(
          detail::last_of(std::forward<Ts>(args_and_token)...)));
}

}  // namespace coproc
