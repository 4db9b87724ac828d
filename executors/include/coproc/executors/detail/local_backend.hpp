#pragma once
// process_pool's backend under basic_pool: forked workers on this host, fed
// through shared-memory rings by pool_core (executors/src/pool_core.hpp).

#include <asio/any_io_executor.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>

#include "coproc/executors/basic_pool.hpp"
#include "coproc/executors/detail/stream_op.hpp"
#include "coproc/executors/detail/submit_support.hpp"
#include "coproc/executors/detail/task_op.hpp"
#include "coproc/executors/pool_options.hpp"
#include "coproc/executors/pool_stats.hpp"
#include "coproc/executors/retry_policy.hpp"
#include "coproc/executors/task_stream.hpp"

namespace coproc::detail {

class pool_core;

class local_backend {
 public:
  static constexpr const char* deadline_message = "process_pool: per-call deadline passed";
  static constexpr bool streams_start_at_once = true;
  static constexpr bool runs_streaming_tasks = true;
  template <class F, class T>
  static constexpr auto chunk_task = &map_chunk<F, T>;

  /// Forks the zygote and asks it for `options.workers` workers.
  local_backend(const asio::any_io_executor& ex, pool_options options);
  /// Kills every worker and the zygote and reaps them; pending operations
  /// complete with asio::error::operation_aborted.
  ~local_backend();
  local_backend(const local_backend&) = delete;
  local_backend& operator=(const local_backend&) = delete;

  /// The typed operation, handed to the core on the caller's thread (no post
  /// on the way in); the core binds its cancellation slot. `retry`: the
  /// call's own policy, else the pool's options apply.
  template <class F, class Handler, class... W>
  void submit(const asio::any_io_executor& ex, std::optional<retry_policy> retry, F f,
              std::tuple<W...> args, Handler handler) {
    auto* op =
        new submit_op<F, Handler, W...>(ex, std::move(f), std::move(args), std::move(handler));
    op->retry = retry;
    start(op);
  }

  /// A streaming task (basic_pool::stream): started now, read through the
  /// returned stream.
  template <class T, class F, class... W>
  task_stream<T> stream(const asio::any_io_executor& ex, F f, std::tuple<W...> args) {
    auto state = std::make_shared<stream_state<T>>(stream_buffer_);
    start(new stream_op<F, T, W...>(ex, std::move(f), std::move(args), state));
    return task_stream<T>(std::move(state));
  }

  void shutdown(shutdown_mode mode, std::function<void()> done);
  pool_stats stats() const;
  std::size_t size() const noexcept { return workers_; }

  /// Hands a built operation to the core, from any thread. Public for the
  /// MPI worker ranks, which forward tasks that arrive already encoded.
  void start(task_op* op);

 private:
  std::size_t workers_;
  std::size_t stream_buffer_;
  std::shared_ptr<pool_core> core_;
};

}  // namespace coproc::detail
