#pragma once
// A streaming task (basic_pool::stream): the code its worker runs
// (run_stream_task, which hands the task an emitter) and the operation the
// pool keeps for it (stream_op), which feeds the caller's task_stream.

#include <asio/any_io_executor.hpp>
#include <asio/executor_work_guard.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/emitted_type.hpp"
#include "coproc/executors/detail/stream_state.hpp"
#include "coproc/executors/detail/task_op.hpp"
#include "coproc/executors/emitter.hpp"
#include "coproc/executors/retry_policy.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {

/// The code a worker runs for one streaming task: rebuild the callable,
/// decode the arguments, call it with an emitter on `out`, then write its
/// (empty) result. Exceptions propagate to the worker loop.
template <class F, class T, class... Args>
void run_stream_task(std::span<const std::byte> body, result_writer& out) {
  auto parts = decode_task_body<F, Args...>(body);
  const F f = from_wire<F>(std::get<0>(parts));
  coproc::emitter<T> emit(out);
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    std::invoke(f, emit, std::move(std::get<I + 1>(parts))...);
  }
  (std::index_sequence_for<Args...>{});
  out.write_void();
}

/// The pool's side of a streaming task. Values the drain hands to emitted()
/// are decoded at once (a worker's next frame may reuse the ring space) and
/// published to the reader in one batch per drain; the end follows them.
template <class F, class T, class... Args>
class stream_op final : public encoded_task<F, Args...> {
 public:
  /// `ex`: the pool's executor, kept busy until the task ended.
  stream_op(const asio::any_io_executor& ex, F f, std::tuple<Args...> args,
            std::shared_ptr<stream_state<T>> shared)
      : encoded_task<F, Args...>(std::move(f), std::move(args)),
        state_(std::move(shared)),
        work_(ex) {
    thunk_fn fn = &run_stream_task<F, T, Args...>;
    this->thunk = code_offset(reinterpret_cast<const void*>(fn));
    // Whatever pool_options::retries says: a second run would emit again
    // what the reader already took from the attempt that crashed.
    this->retry = retry_policy{};
  }

  void bind_cancellation(task_canceller& pool) override {
    state_->id = this->id;
    state_->pool = &pool;
  }

  void emitted(std::span<const std::byte> value) override {
    pending_.push_back(coproc::decode_from<T>(value));
  }

  void publish_emitted() override {
    if (!pending_.empty()) {
      state_->push(pending_);
    }
  }

  void complete(std::span<const std::byte> result) override {
    if (!result.empty()) {
      return fail(std::make_exception_ptr(
          std::system_error(coproc::errc::frame_corrupt, "streaming task returned bytes")));
    }
    finish(nullptr);
  }

  void fail(std::exception_ptr error) override { finish(std::move(error)); }

  void deliver(bool) override {
    state_->end(held_error_);
    auto work = std::move(work_);
    delete this;
  }

  void drop() noexcept override {
    state_->end(std::make_exception_ptr(
                    std::system_error(asio::error::operation_aborted, "process_pool destroyed")),
                false);
    delete this;
  }

 private:
  // Values that arrived before the end are the reader's first; values past
  // the credit are not (the end then says why).
  void finish(std::exception_ptr error) {
    try {
      publish_emitted();
    } catch (...) {
      error = error ? error : std::current_exception();
    }
    held_error_ = std::move(error);
    if (!this->hold_delivery) {
      deliver(false);
    }
  }

  std::shared_ptr<stream_state<T>> state_;
  std::vector<T> pending_;  // decoded, not yet published
  std::exception_ptr held_error_;
  asio::executor_work_guard<asio::any_io_executor> work_;
};

}  // namespace coproc::detail
