#pragma once
// A worker rank's own process_pool. The tasks rank 0 sends run in forked
// workers of this rank, never in the rank process: a task that crashes, runs
// past its deadline or is cancelled costs one worker (killed and replaced on
// this rank), not the MPI job. The MPI thread forwards each task as it
// arrived (already encoded, its thunk a code offset), and sends rank 0 what
// the local pool answers. Private to mpi/src.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include "coproc/executors/detail/local_backend.hpp"
#include "coproc/executors/detail/task_op.hpp"
#include "coproc/executors/retry_policy.hpp"
#include "mpi_wire.hpp"

namespace coproc::detail {

class rank_pool {
 public:
  /// A message for rank 0, ready to send.
  struct reply {
    int tag;
    std::vector<std::byte> bytes;
  };

  /// Starts the pool (forks its zygote and workers) and the thread that runs
  /// its io_context. `initializer` (or null) runs in every new worker.
  /// Throws what process_pool's constructor throws.
  rank_pool(const rank_pool_wire& options, std::size_t max_result, void (*initializer)());
  ~rank_pool() { stop(); }
  rank_pool(const rank_pool&) = delete;
  rank_pool& operator=(const rank_pool&) = delete;

  std::size_t workers() const noexcept { return backend_->size(); }

  /// Runs rank 0's task `id` in a worker of this rank, with its call's
  /// `retry` policy if any; its body is `message` past its first `offset`
  /// bytes (kept, not copied).
  void run(std::uint64_t id, std::int64_t thunk, std::optional<retry_policy> retry,
           std::vector<std::byte> message, std::size_t offset);
  /// Cancels rank 0's task `id`: queued here, it is dropped; running, its
  /// worker is killed. Its reply still comes (operation_aborted).
  void cancel(std::uint64_t id);
  /// The replies ready now (results, and the pool's figures when its workers
  /// changed, checked after a crash and every 50 ms); when there is none,
  /// waits up to `wait` for one.
  std::vector<reply> take(std::chrono::microseconds wait);

  /// Kills the workers and the zygote, stops the loop thread, and returns
  /// the replies not yet taken: those of the tasks it aborted included, as
  /// rank 0 counts every task it sent until its reply comes back.
  std::vector<reply> stop();

  /// Called by a forwarded task (any thread).
  void bind(std::uint64_t origin, std::uint64_t local, task_canceller& canceller);
  void finish(std::uint64_t origin, std::vector<std::byte> bytes);
  void forget(std::uint64_t origin);

 private:
  /// A tag_stats reply when the workers changed since rank 0 last heard.
  void report_changes(std::vector<reply>& out);

  asio::io_context ctx_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::optional<local_backend> backend_;
  std::thread loop_;
  std::size_t max_result_;  // pool_options::max_payload, at most one MPI message

  std::mutex m_;
  std::condition_variable ready_;
  std::vector<reply> replies_;
  // Rank 0's id -> the local pool's id of the same task, while it runs here.
  std::unordered_map<std::uint64_t, std::uint64_t> local_ids_;
  task_canceller* canceller_ = nullptr;
  stats_wire sent_stats_{};  // the figures rank 0 last got (MPI thread only)
  std::chrono::steady_clock::time_point next_check_{};
  std::vector<std::int32_t> sent_pids_;
};

}  // namespace coproc::detail
