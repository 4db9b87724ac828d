#pragma once
// What a coproc::process keeps until start(): the callable and its arguments,
// type-erased, and the fork that runs them.

#include <sys/types.h>
#include <asio/any_io_executor.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/task_checks.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/runtime/child_process.hpp"
#include "coproc/runtime/exit_status.hpp"

namespace coproc::detail {

/// What a started child runs; type-erased so process is not a template.
struct process_body {
  virtual ~process_body() = default;
  virtual void run() = 0;
};

/// A shared object's handle as the body keeps it: the child reaches the
/// object through its own copy of the parent's handle, at the same address.
template <class T>
struct shared_handle_ref {
  T* object;
};

template <class A>
using process_stored_t =
    std::conditional_t<is_shared_handle_arg_v<A>, shared_handle_ref<std::remove_reference_t<A>>,
                       wire_t<A>>;

template <class A>
process_stored_t<A> process_store(A&& a) {
  if constexpr (is_shared_handle_arg_v<A>) {
    return {&a};
  } else {
    return process_stored_t<A>(std::forward<A>(a));
  }
}

template <class T>
T& process_pass(shared_handle_ref<T>& h) noexcept {
  return *h.object;
}
template <class V>
V&& process_pass(V& v) noexcept {
  return std::move(v);
}

template <class F, class... Stored>
struct process_body_impl final : process_body {
  process_body_impl(F f, Stored... s) : fn(std::move(f)), args(std::move(s)...) {}
  void run() override {
    std::apply([&](Stored&... s) { std::invoke(fn, process_pass(s)...); }, args);
  }

  F fn;
  std::tuple<Stored...> args;
};

/// Forks; the child dies with this thread (PR_SET_PDEATHSIG + getppid check),
/// runs body.run() and leaves with _exit(0), or _exit(1) after printing an
/// uncaught exception to stderr.
child_process fork_process(process_body& body);

/// ECHILD from a join, renamed after its cause (SIGCHLD ignored, or reaped
/// by another wait); any other code unchanged.
std::error_code join_error(std::error_code ec) noexcept;

}  // namespace coproc::detail
