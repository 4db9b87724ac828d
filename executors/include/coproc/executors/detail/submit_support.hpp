#pragma once
// What process_pool (and mpi_pool) need around async_submit: the split of
// `args..., token`, the completion signature, and map's chunk task.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "coproc/executors/detail/callable.hpp"

namespace coproc::detail {
class pool_core;

/// Splits `args..., token` into the arguments and the token (Asio puts the
/// completion token last; a parameter pack cannot be followed by one).
template <class... Ts>
decltype(auto) last_of(Ts&&... ts) {
  return std::get<sizeof...(Ts) - 1>(std::forward_as_tuple(std::forward<Ts>(ts)...));
}
template <std::size_t... I, class... Ts>
auto all_but_last(std::index_sequence<I...>, Ts&&... ts) {
  [[maybe_unused]] auto all = std::forward_as_tuple(std::forward<Ts>(ts)...);
  return std::tuple<wire_t<std::tuple_element_t<I, std::tuple<Ts...>>>...>(
      std::get<I>(std::move(all))...);
}

template <class R>
struct signature_of {
  using type = void(std::exception_ptr, R);
};
template <>
struct signature_of<void> {
  using type = void(std::exception_ptr);
};
template <class F, class... Args>
using submit_signature = typename signature_of<task_result_t<F, Args...>>::type;

/// Runs `F` over a chunk of a map's input inside a worker: a function (so it
/// needs no declaration as a task object) taking the callable as it crosses.
template <class F, class T>
std::vector<task_result_t<F, T>> map_chunk(callable_wire_t<F> wire, std::vector<T> items) {
  const F fn = from_wire<F>(wire);
  std::vector<task_result_t<F, T>> out;
  out.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    out.push_back(std::invoke(fn, std::move(items[i])));
  }
  return out;
}

}  // namespace coproc::detail
