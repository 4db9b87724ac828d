#pragma once
// The compile-time rules for a task (callable, arguments, result), each broken
// rule reported by one static_assert in plain words with what to do instead.
// The checks run in a fixed order and stop at the first broken rule, and the
// callers instantiate nothing else when one failed, so a mistake gives one
// error, not a screen of template errors (tests/executors/task_compile_fail).

#include <functional>
#include <type_traits>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/emitted_type.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/process_shared.hpp"

namespace coproc::detail {

template <class>
inline constexpr bool always_false = false;

template <class F>
inline constexpr bool is_std_function_v = is_specialization_v<F, std::function>;

/// The callable alone: see coproc/executors/task_object.hpp for the rule.
template <class F>
constexpr bool check_callable() {
  if constexpr (task_callable<F>) {
    if constexpr (declared_task_object<F> && !coproc::codable<F>) {
      check_codable<F>();  // a declared object's members must be codable
      return false;
    } else {
      return true;
    }
  } else if constexpr (is_std_function_v<F>) {
    static_assert(always_false<F>,
                  "coproc: a std::function cannot be a task's callable: it holds a pointer to "
                  "its target in this process. Pass the function itself, a captureless lambda, "
                  "or a member pointer, and the data as arguments");
    return false;
  } else if constexpr (std::is_class_v<F>) {
    static_assert(always_false<F>,
                  "coproc: this callable has state (a lambda with captures, std::mem_fn, std::bind "
                  "or a function object with members) that may hold an address of this process, "
                  "which means nothing in the worker. Pass the data as arguments: "
                  "submit([](int k, int x) { return k * x; }, k, x); for a member function pass "
                  "&type::member and the object; a function object whose members are values may "
                  "declare it with coproc::enable_task_object (coproc/executors/task_object.hpp)");
    return false;
  } else {
    static_assert(always_false<F>,
                  "coproc: a task's callable must be a function, a member pointer, a "
                  "captureless lambda or a declared task object");
    return false;
  }
}

/// The first argument that cannot cross, reported with its specific reason.
template <class... W>
constexpr bool check_arguments() {
  if constexpr (sizeof...(W) == 0) {
    return true;
  } else {
    return []<class First, class... Rest>(std::type_identity<First>, std::type_identity<Rest>...) {
      if constexpr (!coproc::codable<First>) {
        check_codable<First>();
        return false;
      } else {
        return check_arguments<Rest...>();
      }
    }(std::type_identity<W>{}...);
  }
}

/// The call the worker makes: `std::invoke(const F&, W&&...)`.
template <class F, class... W>
constexpr bool check_invocable() {
  if constexpr (std::is_invocable_v<const F&, W&&...>) {
    return true;
  } else if constexpr (std::is_invocable_v<F&, W&&...>) {
    static_assert(always_false<F>,
                  "coproc: a mutable lambda (or a non-const operator()) cannot be a task: its "
                  "changes would happen only in the worker's copy. Remove `mutable`, pass the "
                  "state as an argument and return the new value");
    return false;
  } else if constexpr (std::is_invocable_v<const F&, W&...>) {
    static_assert(always_false<F>,
                  "coproc: the task function takes a non-const reference (an out-parameter): it "
                  "would write to the worker's copy, which the caller never sees. Take the "
                  "parameter by value or const reference and return the result instead");
    return false;
  } else {
    static_assert(always_false<F>,
                  "coproc: the callable cannot be called with these arguments (each argument "
                  "is passed as a decayed value; a member pointer takes the object first)");
    return false;
  }
}

/// The result that crosses back.
template <class R>
constexpr bool check_result() {
  if constexpr (std::is_void_v<R>) {
    return true;
  } else if constexpr (!coproc::codable<R>) {
    check_codable<R>();
    return false;
  } else if constexpr (!std::is_default_constructible_v<R>) {
    static_assert(always_false<R>,
                  "coproc: the task's result type must be default-constructible (it is built "
                  "empty, then decoded); add a default constructor or return std::optional<R>");
    return false;
  } else {
    return true;
  }
}

// Each later rule is only instantiated when the earlier ones hold (nested
// if constexpr: a `||` would instantiate every operand and report them all).

/// A mutable lambda with captures: named as such rather than as a capture.
template <class F, class... W>
constexpr bool check_not_mutable_closure() {
  if constexpr (std::is_class_v<F> && !task_callable<F> && !is_std_function_v<F> &&
                !std::is_invocable_v<const F&, W&&...> && std::is_invocable_v<F&, W&&...>) {
    static_assert(always_false<F>,
                  "coproc: a mutable lambda cannot be a task: its changes would happen only in "
                  "the worker's copy, and its captures may hold addresses of this process. "
                  "Remove `mutable` and the captures, pass the state as arguments and return the "
                  "new value");
    return false;
  } else {
    return true;
  }
}

/// Every rule for `fn(args...)` as a pool task; true when all hold.
template <class F, class... W>
constexpr bool check_task() {
  if constexpr (!check_not_mutable_closure<F, W...>()) {
    return false;
  } else if constexpr (!check_callable<F>()) {
    return false;
  } else if constexpr (!check_arguments<W...>()) {
    return false;
  } else if constexpr (!check_invocable<F, W...>()) {
    return false;
  } else {
    return check_result<task_result_t<F, W...>>();
  }
}

/// map and map_unordered: a task over one item that returns a value.
template <class F, class T>
constexpr bool check_map_task() {
  if constexpr (!check_callable<F>()) {
    return false;
  } else if constexpr (!check_arguments<T>()) {
    return false;
  } else if constexpr (!check_invocable<F, T>()) {
    return false;
  } else if constexpr (std::is_void_v<task_result_t<F, T>>) {
    static_assert(always_false<F>,
                  "coproc: map needs a function that returns a value; for side effects only, "
                  "submit each item, or return a status (e.g. bool)");
    return false;
  } else {
    return check_result<task_result_t<F, T>>();
  }
}

/// basic_pool::stream: a task whose first parameter is `coproc::emitter<T>&`
/// (T read from it: a function, or a class with one non-template call
/// operator), called with the emitter and the arguments, returning nothing.
template <class F, class... W>
constexpr bool check_stream_task() {
  using T = emitted_t<F>;
  if constexpr (!check_callable<F>()) {
    return false;
  } else if constexpr (std::is_void_v<T>) {
    static_assert(always_false<F>,
                  "coproc: a streaming task's first parameter must be coproc::emitter<T>& (a "
                  "function, or a lambda whose parameters are not auto), through which it sends "
                  "its values: void scan(coproc::emitter<match>& out, std::string path)");
    return false;
  } else if constexpr (!check_arguments<W...>()) {
    return false;
  } else if constexpr (!check_result<T>()) {
    return false;  // the emitted type crosses back like a result
  } else if constexpr (!std::is_invocable_v<const F&, coproc::emitter<T>&, W&&...>) {
    static_assert(always_false<F>,
                  "coproc: the streaming task cannot be called with an emitter and these "
                  "arguments (each argument is passed as a decayed value)");
    return false;
  } else if constexpr (!std::is_void_v<
                           std::invoke_result_t<const F&, coproc::emitter<T>&, W&&...>>) {
    static_assert(always_false<F>,
                  "coproc: a streaming task returns void: its results are what it emits");
    return false;
  } else {
    return true;
  }
}

/// An argument of coproc::process: a shared object's handle, passed by
/// reference (the child reaches it through its copy of the handle), or a
/// codable value (the child gets its own copy).
template <class A>
inline constexpr bool is_shared_handle_arg_v = coproc::is_process_shared_v<std::remove_cvref_t<A>>;

/// How the child's function receives argument A: a handle as T&, a value as
/// an rvalue of its wire type.
template <class A>
using process_param_t =
    std::conditional_t<is_shared_handle_arg_v<A>, std::remove_reference_t<A>&, wire_t<A>&&>;

template <class... A>
constexpr bool check_process_arguments() {
  if constexpr (sizeof...(A) == 0) {
    return true;
  } else {
    return []<class First, class... Rest>(std::type_identity<First>, std::type_identity<Rest>...) {
      if constexpr (is_shared_handle_arg_v<First> && !std::is_lvalue_reference_v<First>) {
        static_assert(always_false<First>,
                      "coproc: a queue, connection, sync primitive or manager proxy is handed to "
                      "a process by reference: pass a named object (an lvalue), not a temporary "
                      "or std::move of one, and take it as T& in the function");
        return false;
      } else if constexpr (!is_shared_handle_arg_v<First> && !coproc::codable<wire_t<First>>) {
        check_codable<wire_t<First>>();
        return false;
      } else {
        return check_process_arguments<Rest...>();
      }
    }(std::type_identity<A>{}...);
  }
}

/// Every rule for coproc::process(fn, args...): the pool's callable rule (the
/// same code may later run in a spawned child), codable values or shared
/// handles as arguments.
template <class F, class... A>
constexpr bool check_process() {
  if constexpr (!check_callable<F>()) {
    return false;
  } else if constexpr (!check_process_arguments<A...>()) {
    return false;
  } else if constexpr (std::is_invocable_v<F&, process_param_t<A>...>) {
    return true;
  } else if constexpr (std::is_invocable_v<F&,
                                           std::conditional_t<is_shared_handle_arg_v<A>,
                                                              process_param_t<A>, wire_t<A>&>...>) {
    static_assert(always_false<F>,
                  "coproc: the process function takes a non-const reference to a value argument "
                  "(an out-parameter): it would write to the child's copy, which the parent "
                  "never sees. Send results back through a queue or connection argument");
    return false;
  } else {
    static_assert(always_false<F>,
                  "coproc: the process function cannot be called with these arguments (values "
                  "arrive as rvalues of their decayed type, shared objects as T&)");
    return false;
  }
}

/// The result type when the call is well-formed and not void, else int: what
/// a failed check's placeholder return uses, so that nothing else fails to
/// compile.
template <class F, class... W>
struct result_or_int {
  using type = int;
};
template <class F, class... W>
requires std::is_invocable_v<const F&, W&&...> &&
    (!std::is_void_v<task_result_t<F, W...>>)struct result_or_int<F, W...> {
  using type = task_result_t<F, W...>;
};
template <class F, class... W>
using result_or_int_t = typename result_or_int<F, W...>::type;

}  // namespace coproc::detail
