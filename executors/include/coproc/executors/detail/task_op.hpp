#pragma once
// A submitted task as the parent keeps it: type-erased so the pool's core
// (non-template, in src/) can queue, encode, complete and fail it.

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/dispatch.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <system_error>
#include <tuple>
#include <typeinfo>
#include <utility>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/task_attempts.hpp"
#include "coproc/executors/retry_policy.hpp"
#include "coproc/executors/task_stopped_error.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/detail/decode_into.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {

/// What a task's cancellation slot reaches: the pool that holds the task.
class task_canceller {
 public:
  /// Cancels task `id`; no effect when it already finished. Called on the
  /// handler's executor, where Asio emits cancellation.
  virtual void cancel(std::uint64_t id) = 0;
  /// The caller of streaming task `id` has read `read` of its values: the
  /// worker may emit up to pool_options::stream_buffer more (emit_credit).
  virtual void stream_read(std::uint64_t id, std::uint64_t read) = 0;

 protected:
  ~task_canceller() = default;
};

/// Why the pool asked a running task to stop (pool_options::stop_grace).
enum class stop_reason : std::uint8_t { none, cancelled, timed_out };

class task_op {
 public:
  std::uint64_t id = 0;
  std::int64_t thunk = 0;
  int worker = -1;                              // slot it was sent to; -1 while queued
  std::uint64_t seq = 0;                        // its index among the frames sent to that slot
  std::atomic<std::uint32_t>* state = nullptr;  // its frame's state word while in a ring
  bool in_arena = false;                        // its body occupies the slot's input arena
  std::int64_t sent_ns = 0;                     // when it entered a worker's ring (monotonic)
  std::uint8_t deaths = 0;  // workers that died while it was the oldest in their ring
  stop_reason stopped = stop_reason::none;  // asked to stop; its worker kept for the grace
  /// The call's own retry_policy; empty: the pool's options decide.
  std::optional<retry_policy> retry;
  /// Why its earlier attempts failed; made when a retryable attempt fails.
  std::unique_ptr<task_attempts> attempts;
  /// Set by the pool before complete() or fail() when it will hand the
  /// completion over itself, through deliver(), once out of its lock.
  bool hold_delivery = false;
  task_op* next_held = nullptr;  // the pool's list of held completions

  /// Leaves the worker it was sent to (its frame withdrawn, or its worker
  /// gone), to wait in the queue again.
  void unsend() {
    worker = -1;
    state = nullptr;
  }

  /// Bytes of the task body: the callable as it crosses, then the arguments.
  virtual std::size_t body_size() const = 0;
  virtual void encode_body(std::span<std::byte> out) const = 0;
  /// Decodes the result and completes the handler (posted), deletes this;
  /// with hold_delivery, keeps the outcome for deliver() instead.
  virtual void complete(std::span<const std::byte> result) = 0;
  /// Completes the handler with `error` (posted), deletes this; with
  /// hold_delivery, keeps the outcome for deliver() instead.
  virtual void fail(std::exception_ptr error) = 0;
  /// Hands a held outcome to the handler and deletes this. `may_run_inline`:
  /// through asio::dispatch (the handler runs now when its executor runs in
  /// this thread: the pool calls it from its own completion handler, never
  /// from an initiating function), else posted.
  virtual void deliver(bool may_run_inline) = 0;
  /// A value the task emitted (a streaming task: see stream_op.hpp), kept
  /// until publish_emitted(). Throws when it does not decode, or when the
  /// task does not stream: a worker following the protocol sends neither.
  virtual void emitted(std::span<const std::byte>) {
    throw std::system_error(coproc::errc::frame_corrupt, "a task that does not stream emitted");
  }
  /// Hands the values kept by emitted() to the task's reader. Throws when
  /// the worker emitted past its credit.
  virtual void publish_emitted() {}
  /// Decodes the value a task returned after it was asked to stop into
  /// `into` (held type-erased; its caller reads it through
  /// task_stopped_error::value). An op that does not know its value's type
  /// keeps none. May throw what decoding throws.
  virtual void keep_value(std::span<const std::byte> result, task_outcome& into) {
    (void)result;
    (void)into;
  }
  /// Connects the handler's cancellation slot (if any) to `pool`.
  virtual void bind_cancellation(task_canceller& pool) = 0;
  /// Destroys the handler uncalled and deletes this: the handler's io_context
  /// is being destroyed, so nothing may be posted to it.
  virtual void drop() noexcept = 0;

 protected:
  virtual ~task_op() = default;
};

/// The index of the first of Args that is R when a result R decodes into an
/// existing value's storage (decode_into); sizeof...(Args) when none.
template <class R, class... Args>
constexpr std::size_t storage_donor() {
  if constexpr (std::is_void_v<R>) {
    return sizeof...(Args);
  } else if constexpr (!decodes_into_storage_v<R>) {
    return sizeof...(Args);
  } else {
    constexpr bool same[] = {std::is_same_v<Args, R>..., false};
    std::size_t i = 0;
    while (i < sizeof...(Args) && !same[i]) {
      ++i;
    }
    return i;
  }
}

template <class R>
using completion_value_t = std::conditional_t<std::is_void_v<R>, std::tuple<>, std::tuple<R>>;

/// What every typed task keeps to send itself: the callable as it crosses
/// and the arguments, encoded into a task body at each send (a retried task
/// is encoded again).
template <class F, class... Args>
class encoded_task : public task_op {
 public:
  std::size_t body_size() const override {
    return std::apply([&](const auto&... a) { return coproc::encoded_size(wire_, a...); }, args_);
  }

  void encode_body(std::span<std::byte> out) const override {
    std::apply([&](const auto&... a) { coproc::encode(out, wire_, a...); }, args_);
  }

 protected:
  encoded_task(F f, std::tuple<Args...> args) : wire_(to_wire(f)), args_(std::move(args)) {}

  callable_wire_t<F> wire_;  // the callable as it crosses
  std::tuple<Args...> args_;
};

/// The typed task: callable, arguments and the user's completion handler.
template <class F, class Handler, class... Args>
class submit_op final : public encoded_task<F, Args...> {
 public:
  using result_type = task_result_t<F, Args...>;

  /// `ex` is the pool's executor: the handler's default associated executor.
  submit_op(const asio::any_io_executor& ex, F f, std::tuple<Args...> args, Handler handler)
      : encoded_task<F, Args...>(std::move(f), std::move(args)),
        handler_(std::move(handler)),
        work_(asio::get_associated_executor(handler_, ex)) {
    this->thunk = thunk_offset<F, Args...>();
  }

  /// Connects the handler's cancellation slot to the pool.
  void bind_cancellation(task_canceller& pool) override {
    auto slot = asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected()) {
      slot.assign([pool = &pool, id = this->id](asio::cancellation_type) { pool->cancel(id); });
    }
  }

  void drop() noexcept override {
    asio::get_associated_cancellation_slot(handler_).clear();
    delete this;
  }

  void complete(std::span<const std::byte> result) override {
    if constexpr (std::is_void_v<result_type>) {
      if (!result.empty()) {
        return fail(std::make_exception_ptr(
            std::system_error(coproc::errc::frame_corrupt, "void task returned bytes")));
      }
      finish(nullptr);
    } else {
      try {
        finish(nullptr, decode_result(result));
      } catch (...) {
        fail(std::current_exception());
      }
    }
  }

  void keep_value(std::span<const std::byte> result, task_outcome& into) override {
    if constexpr (!std::is_void_v<result_type>) {
      into.value = std::make_shared<const result_type>(decode_result(result));
      into.type = &typeid(result_type);
    }
  }

  void fail(std::exception_ptr error) override {
    if constexpr (std::is_void_v<result_type>) {
      finish(error);
    } else {
      finish(error, result_type{});
    }
  }

 private:
  /// The result, decoded into the storage of an argument of its type when it
  /// is a block-copied container (a moved-in std::vector<double> comes back
  /// in its own buffer): the arguments are dead once the result is here (a
  /// retried task is encoded again before, never after), and their pages are
  /// faulted in, where a new allocation of the result's size would pay page
  /// faults and the kernel's zeroing.
  result_type decode_result(std::span<const std::byte> bytes) {
    constexpr std::size_t donor = storage_donor<result_type, Args...>();
    if constexpr (donor < sizeof...(Args)) {
      result_type value = std::move(std::get<donor>(this->args_));
      decode_into(bytes, value);
      return value;
    } else {
      return coproc::decode_from<result_type>(bytes);
    }
  }

  template <class... V>
  void finish(std::exception_ptr error, V&&... value) {
    asio::get_associated_cancellation_slot(handler_).clear();
    held_error_ = error;
    if constexpr (sizeof...(V) == 1) {
      held_value_.emplace(std::forward<V>(value)...);
    }
    if (!this->hold_delivery) {
      deliver(false);
    }
  }

  void deliver(bool may_run_inline) override {
    auto ex = work_.get_executor();
    auto bound = [h = std::move(handler_), e = held_error_, v = std::move(held_value_)]() mutable {
      if constexpr (std::is_void_v<result_type>) {
        std::move(h)(e);
      } else {
        std::move(h)(e, std::move(*v));
      }
    };
    auto work = std::move(work_);
    delete this;
    if (may_run_inline) {
      asio::dispatch(ex, std::move(bound));
    } else {
      asio::post(ex, std::move(bound));
    }
  }

  using held_t = std::conditional_t<std::is_void_v<result_type>, char, result_type>;

  Handler handler_;
  std::exception_ptr held_error_;
  std::optional<held_t> held_value_;
  asio::executor_work_guard<asio::associated_executor_t<Handler, asio::any_io_executor>> work_;
};

}  // namespace coproc::detail
