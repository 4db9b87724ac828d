#pragma once
// The identity of a callable and of the code that runs it in a worker.
//
// A task names the code to run by its offset from an anchor function of this
// binary (detail/code_identity.hpp), not by a raw address. What the callable
// carries (a code offset, a member pointer, or a declared task object's
// encoding) travels in front of the task's arguments.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "coproc/executors/detail/code_identity.hpp"
#include "coproc/executors/emitter.hpp"
#include "coproc/executors/task_object.hpp"
#include "coproc/ipc/codec.hpp"

namespace coproc::detail {

/// Type an argument crosses as: string literals and char pointers become
/// std::string, everything else its decayed type.
template <class T>
using wire_t = std::conditional_t<std::is_same_v<std::decay_t<T>, const char*> ||
                                      std::is_same_v<std::decay_t<T>, char*>,
                                  std::string, std::decay_t<T>>;

template <class F>
concept function_pointer = std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

template <class F>
concept member_function_pointer = std::is_member_function_pointer_v<F>;

template <class F>
concept member_data_pointer = std::is_member_object_pointer_v<F>;

/// An empty class (a captureless lambda, a stateless function object): no
/// state, so nothing of the caller's memory can travel with it.
template <class F>
concept stateless_callable =
    std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>;

/// A function object with state whose type declares its members are values
/// (coproc::enable_task_object, or a cereal serialization); it crosses
/// through the codec like an argument.
template <class F>
concept declared_task_object = std::is_class_v<F> && !stateless_callable<F> &&
                               (coproc::enable_task_object<F> || has_cereal_functions_v<F>);

/// Every callable a task may carry: see coproc/executors/task_object.hpp.
template <class F>
concept task_callable = function_pointer<F> || member_function_pointer<F> ||
    member_data_pointer<F> || stateless_callable<F> || declared_task_object<F>;

/// A member function pointer as it crosses. The Itanium C++ ABI (g++ and
/// clang on Linux) stores {ptr, adj}: ptr is the function's address, or a
/// vtable offset (+1) for a virtual function; on ARM the virtual flag is adj's
/// low bit instead. An address is sent as its offset from image_anchor, like
/// a function pointer; a vtable offset and adj are the same in every process.
struct member_function_wire {
  std::int64_t ptr = 0;
  std::int64_t adj = 0;
  std::uint8_t is_address = 0;
};

template <class F>
constexpr bool member_function_pointer_is_itanium() {
  return sizeof(F) == 2 * sizeof(std::intptr_t);
}

inline bool member_function_is_virtual(std::intptr_t ptr, std::intptr_t adj) noexcept {
#if defined(__arm__) || defined(__aarch64__)
  (void)ptr;
  return (adj & 1) != 0;
#else
  (void)adj;
  return (ptr & 1) != 0;
#endif
}

/// The type a callable crosses as, in front of the task's arguments.
template <class F>
struct callable_wire_of {
  using type = F;  // a declared task object: itself, through the codec
};
template <function_pointer F>
struct callable_wire_of<F> {
  using type = std::int64_t;  // offset from image_anchor
};
template <member_function_pointer F>
struct callable_wire_of<F> {
  using type = member_function_wire;
};
template <member_data_pointer F>
struct callable_wire_of<F> {
  using type = std::ptrdiff_t;  // the member's offset, as the ABI stores it
};
template <stateless_callable F>
struct callable_wire_of<F> {
  using type = std::monostate;  // nothing: rebuilt by default construction
};
template <class F>
using callable_wire_t = typename callable_wire_of<F>::type;

template <class F>
callable_wire_t<F> to_wire(const F& f) {
  if constexpr (function_pointer<F>) {
    return code_offset(reinterpret_cast<const void*>(f));
  } else if constexpr (member_function_pointer<F>) {
    static_assert(member_function_pointer_is_itanium<F>(),
                  "coproc: member function pointers need the Itanium C++ ABI layout");
    std::intptr_t raw[2];
    std::memcpy(raw, &f, sizeof raw);
    bool is_address = !member_function_is_virtual(raw[0], raw[1]) && raw[0] != 0;
    return {is_address ? code_offset(reinterpret_cast<const void*>(raw[0])) : raw[0], raw[1],
            static_cast<std::uint8_t>(is_address)};
  } else if constexpr (member_data_pointer<F>) {
    std::ptrdiff_t raw;
    static_assert(sizeof(F) == sizeof raw, "coproc: unexpected member data pointer layout");
    std::memcpy(&raw, &f, sizeof raw);
    return raw;
  } else if constexpr (stateless_callable<F>) {
    return {};
  } else {
    return f;
  }
}

/// Rebuilds the callable in the worker; a code address is checked
/// (checked_code_address) before it can be called.
template <class F>
F from_wire(const callable_wire_t<F>& w) {
  if constexpr (function_pointer<F>) {
    return reinterpret_cast<F>(const_cast<void*>(checked_code_address(w)));
  } else if constexpr (member_function_pointer<F>) {
    if (w.is_address > 1) {
      throw std::system_error(coproc::errc::frame_corrupt, "member function pointer flag");
    }
    std::intptr_t raw[2] = {static_cast<std::intptr_t>(w.ptr), static_cast<std::intptr_t>(w.adj)};
    if (w.is_address != 0) {
      raw[0] = reinterpret_cast<std::intptr_t>(checked_code_address(w.ptr));
    } else if (raw[0] != 0 && !member_function_is_virtual(raw[0], raw[1])) {
      throw std::system_error(coproc::errc::frame_corrupt, "member function pointer");
    }
    F f;
    std::memcpy(&f, raw, sizeof raw);
    return f;
  } else if constexpr (member_data_pointer<F>) {
    F f;
    std::memcpy(&f, &w, sizeof f);
    return f;
  } else if constexpr (stateless_callable<F>) {
    return F{};
  } else {
    return w;
  }
}

/// What a task returns, decayed.
template <class F, class... Args>
using task_result_t = std::decay_t<std::invoke_result_t<const F&, Args&&...>>;

/// Where a worker writes a task's result (and a streaming task's values);
/// implemented by the worker loop.
class result_writer : public emit_sink {
 public:
  /// Space for `n` bytes of encoded result (ring or arena).
  virtual std::span<std::byte> reserve(std::size_t n) = 0;
  /// Publishes the `n` bytes last reserved.
  virtual void commit(std::size_t n) = 0;

  template <class R>
  void write_value(const R& value) {
    std::size_t n = coproc::encoded_size(value);
    std::span<std::byte> out = reserve(n);
    coproc::encode(out, value);
    commit(n);
  }
  void write_void() {
    reserve(0);
    commit(0);
  }

 protected:
  ~result_writer() = default;
};

/// The code a worker runs for one task: rebuild the callable, decode the
/// arguments, call, write the result. Exceptions propagate to the worker loop.
using thunk_fn = void (*)(std::span<const std::byte> body, result_writer& out);

/// A task body decoded: the callable as it crossed, then the arguments.
template <class F, class... Args>
std::tuple<callable_wire_t<F>, Args...> decode_task_body(std::span<const std::byte> body) {
  coproc::decoder in(body);
  // Braces: the callable, then the arguments, left to right.
  std::tuple<callable_wire_t<F>, Args...> parts{in.template decode<callable_wire_t<F>>(),
                                                in.template decode<Args>()...};
  if (in.remaining() != 0) {
    throw std::system_error(coproc::errc::frame_corrupt, "trailing bytes after task arguments");
  }
  return parts;
}

template <class F, class... Args>
void run_task(std::span<const std::byte> body, result_writer& out) {
  auto parts = decode_task_body<F, Args...>(body);
  const F f = from_wire<F>(std::get<0>(parts));
  auto call = [&]<std::size_t... I>(std::index_sequence<I...>)->decltype(auto) {
    return std::invoke(f, std::move(std::get<I + 1>(parts))...);
  };
  using R = task_result_t<F, Args...>;
  if constexpr (std::is_void_v<R>) {
    call(std::index_sequence_for<Args...>{});
    out.write_void();
  } else {
    out.write_value(static_cast<const R&>(call(std::index_sequence_for<Args...>{})));
  }
}

template <class F, class... Args>
std::int64_t thunk_offset() noexcept {
  thunk_fn fn = &run_task<F, Args...>;
  return code_offset(reinterpret_cast<const void*>(fn));
}

}  // namespace coproc::detail
