#pragma once
// emitted_t<F>: the value type of a streaming task, read from its first
// parameter (`coproc::emitter<T>&`), so that pool.stream(fn, args...) needs
// no explicit type.

#include <type_traits>

#include "coproc/executors/emitter.hpp"

namespace coproc::detail {

/// The first parameter's type of a function, or of a class's (non-template)
/// call operator; void when there is none.
template <class F>
struct first_parameter {
  using type = void;
};
template <class R, class A, class... More>
struct first_parameter<R (*)(A, More...)> {
  using type = A;
};
template <class R, class A, class... More>
struct first_parameter<R (*)(A, More...) noexcept> {
  using type = A;
};
template <class C, class R, class A, class... More>
struct first_parameter<R (C::*)(A, More...) const> {
  using type = A;
};
template <class C, class R, class A, class... More>
struct first_parameter<R (C::*)(A, More...) const noexcept> {
  using type = A;
};
template <class F>
requires std::is_class_v<F> && requires {
  &F::operator();
}
struct first_parameter<F> : first_parameter<decltype(&F::operator())> {};

/// T of a task whose first parameter is `coproc::emitter<T>&`; void otherwise.
template <class P>
struct emitter_value {
  using type = void;
};
template <class T>
struct emitter_value<coproc::emitter<T>&> {
  using type = T;
};
template <class F>
using emitted_t = typename emitter_value<typename first_parameter<F>::type>::type;

}  // namespace coproc::detail
