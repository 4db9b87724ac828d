#pragma once
// The identity of a callable and of the code that runs it in a worker.
//
// A task names the code to run by its offset from an anchor function of this
// binary, not by a raw address: forked workers share the parent's addresses,
// and a later exec-based start method can resolve the same offset against the
// same build. What the callable carries (a function pointer, or the bytes of
// a trivially copyable functor) travels in the task body.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "coproc/ipc/codec.hpp"

namespace coproc::detail {

/// The function whose address anchors every code offset (defined in src/).
void image_anchor() noexcept;

inline std::int64_t code_offset(const void* p) noexcept {
  return reinterpret_cast<std::intptr_t>(p) - reinterpret_cast<std::intptr_t>(&image_anchor);
}
inline const void* code_address(std::int64_t offset) noexcept {
  return reinterpret_cast<const void*>(reinterpret_cast<std::intptr_t>(&image_anchor) + offset);
}

/// Where a worker may jump: the executable code of the main program. Filled
/// only in a spawned zygote (an exec'd image, where a shared library may load
/// at another address, so an offset into one would land on foreign bytes);
/// empty under fork_server, whose workers share the parent's whole layout.
struct worker_code_ranges {
  static constexpr int max_ranges = 8;
  std::uintptr_t begin[max_ranges] = {};
  std::uintptr_t end[max_ranges] = {};
  int count = 0;
};
inline worker_code_ranges& allowed_code() noexcept {
  static worker_code_ranges ranges;
  return ranges;
}

/// code_address, refused with errc::function_mismatch where the worker's
/// allowed code does not hold it (a task function of a shared library under
/// start_method::spawn): never a jump to an unknown address.
const void* checked_code_address(std::int64_t offset);

/// Type an argument crosses as: string literals and char pointers become
/// std::string, everything else its decayed type.
template <class T>
using wire_t = std::conditional_t<std::is_same_v<std::decay_t<T>, const char*> ||
                                      std::is_same_v<std::decay_t<T>, char*>,
                                  std::string, std::decay_t<T>>;

template <class F>
concept function_pointer = std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

template <class F>
concept stateless_callable =
    std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>;

template <class F>
concept copyable_functor = std::is_class_v<F> && std::is_trivially_copyable_v<F>;

template <class F>
constexpr bool valid_callable = function_pointer<F> || stateless_callable<F> || copyable_functor<F>;

template <class F>
constexpr void check_callable() {
  static_assert(valid_callable<F>,
                "coproc: a task's callable must be a function, a captureless lambda, a "
                "stateless function object or a trivially copyable functor (by-value "
                "captures only): it is rebuilt byte for byte in the worker process");
}

/// Bytes the callable itself takes in a task body.
template <class F>
constexpr std::size_t callable_size() {
  if constexpr (function_pointer<F>) {
    return sizeof(std::int64_t);
  } else if constexpr (stateless_callable<F>) {
    return 0;
  } else {
    return sizeof(F);
  }
}

template <class F>
void store_callable(std::byte* out, const F& f) {
  if constexpr (function_pointer<F>) {
    std::int64_t off = code_offset(reinterpret_cast<const void*>(f));
    std::memcpy(out, &off, sizeof off);
  } else if constexpr (!stateless_callable<F>) {
    std::memcpy(out, &f, sizeof(F));
  }
}

template <class F>
F load_callable(const std::byte* in) {
  if constexpr (function_pointer<F>) {
    std::int64_t off;
    std::memcpy(&off, in, sizeof off);
    return reinterpret_cast<F>(const_cast<void*>(checked_code_address(off)));
  } else if constexpr (stateless_callable<F>) {
    return F{};
  } else {
    alignas(F) std::byte storage[sizeof(F)];
    std::memcpy(storage, in, sizeof(F));
    return *std::launder(reinterpret_cast<F*>(storage));
  }
}

/// What a task returns, decayed.
template <class F, class... Args>
using task_result_t = std::decay_t<std::invoke_result_t<const F&, Args&&...>>;

/// Where a worker writes a task's result; implemented by the worker loop.
class result_writer {
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

template <class F, class... Args>
void run_task(std::span<const std::byte> body, result_writer& out) {
  if (body.size() < callable_size<F>()) {
    throw std::system_error(coproc::errc::frame_corrupt, "task body shorter than its callable");
  }
  F f = load_callable<F>(body.data());
  coproc::decoder in(body.subspan(callable_size<F>()));
  std::tuple<Args...> args{in.template decode<Args>()...};  // braces: left to right
  if (in.remaining() != 0) {
    throw std::system_error(coproc::errc::frame_corrupt, "trailing bytes after task arguments");
  }
  using R = task_result_t<F, Args...>;
  if constexpr (std::is_void_v<R>) {
    std::apply(f, std::move(args));
    out.write_void();
  } else {
    out.write_value(std::apply(f, std::move(args)));
  }
}

template <class F, class... Args>
std::int64_t thunk_offset() noexcept {
  thunk_fn fn = &run_task<F, Args...>;
  return code_offset(reinterpret_cast<const void*>(fn));
}

}  // namespace coproc::detail
