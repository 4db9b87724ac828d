#pragma once
// What coproc::async_submit_ec needs: an exception turned into a code, and
// the initiation wrapping a pool's async_submit.

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/error.hpp>
#include <exception>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

#include "coproc/executors/detail/submit_support.hpp"
#include "coproc/executors/detail/task_checks.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc {

namespace detail {

/// The code an infrastructure failure carries; empty for a task's own exception.
inline std::error_code infrastructure_code(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& x) {
    const std::error_code& c = x.code();
    if (c == asio::error::operation_aborted) {
      return c;
    }
    if (c.category() == coproc::error_category()) {
      switch (static_cast<coproc::errc>(c.value())) {
        case errc::worker_crashed:
        case errc::task_timeout:
        case errc::pool_stopped:
        case errc::pool_broken:
        case errc::frame_corrupt:
        case errc::frame_too_large:
        case errc::payload_too_large:
        case errc::function_mismatch:
          return c;
        default:
          break;
      }
    }
  } catch (...) {
  }
  return {};
}

/// The code for a completion's exception (none, infrastructure, task_raised),
/// storing a task's own exception into `slot` when there is one.
inline std::error_code code_for(const std::exception_ptr& e, std::exception_ptr* slot) noexcept {
  if (!e) {
    return {};
  }
  if (std::error_code c = infrastructure_code(e)) {
    return c;
  }
  if (slot != nullptr) {
    *slot = e;
  }
  return make_error_code(errc::task_raised);
}

template <class F, class... W>
struct invoke_result_or_void {
  using type = void;
};
template <class F, class... W>
requires std::is_invocable_v<const F&, W&&...>
struct invoke_result_or_void<F, W...> {
  using type = task_result_t<F, W...>;
};
template <class F, class... W>
using invoke_result_or_void_t = typename invoke_result_or_void<F, W...>::type;

template <class R>
struct ec_signature {
  using type = void(std::error_code, R);
};
template <>
struct ec_signature<void> {
  using type = void(std::error_code);
};

/// The initiation: async_submit with a handler that converts its exception
/// into a code, bound to the user's handler's executor and cancellation slot
/// (so completion and cancellation are the user handler's, as Asio requires).
template <class R>
struct submit_ec_initiation {
  template <class Handler, class Pool, class F, class Args>
  void operator()(Handler handler, Pool* pool, std::exception_ptr* slot, F fn, Args args) const {
    auto ex = asio::get_associated_executor(handler, pool->get_executor());
    auto cancel = asio::get_associated_cancellation_slot(handler);
    auto convert = [h = std::move(handler), slot](std::exception_ptr e, auto&&... value) mutable {
      std::move(h)(code_for(e, slot), std::forward<decltype(value)>(value)...);
    };
    std::apply(
        [&](auto&&... a) {
          pool->async_submit(
              std::move(fn), std::forward<decltype(a)>(a)...,
              asio::bind_cancellation_slot(cancel, asio::bind_executor(ex, std::move(convert))));
        },
        std::move(args));
  }
};

template <class Pool, class F, class Args, class Token>
auto async_submit_ec_tuple(Pool& pool, std::exception_ptr* slot, F fn, Args args, Token&& token) {
  return std::apply(
      [&]<class... W>(W&&...) {
        // void when the call is well-formed and returns nothing; else the
        // result, or int when the call is refused (the pool's check reports it).
        using R = std::conditional_t<std::is_invocable_v<const F&, std::decay_t<W>&&...>,
                                     invoke_result_or_void_t<F, std::decay_t<W>...>,
                                     result_or_int_t<F, std::decay_t<W>...>>;
        return asio::async_initiate<Token, typename ec_signature<R>::type>(
            submit_ec_initiation<R>{}, token, &pool, slot, std::move(fn), std::move(args));
      },
      std::move(args));
}

}  // namespace detail

}  // namespace coproc
