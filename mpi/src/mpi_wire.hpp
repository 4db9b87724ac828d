#pragma once
// mpi_pool's messages and what rank 0 and the worker ranks share: tags, the
// trivially copyable heads of each message, the idle back-off. Private to
// mpi/src.

#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace coproc::detail {

enum tag : int {
  tag_hello = 101,
  tag_ack,
  tag_task,
  tag_result,
  tag_bye,
  tag_stop,
  tag_cancel,  // rank 0 -> rank: cancel_wire; the rank kills the task's worker
  tag_stats,   // rank -> rank 0: stats_wire, then the live workers' pids (int32 each)
};
inline constexpr std::uint32_t status_value = 0;
inline constexpr std::uint32_t status_exception = 1;
inline constexpr std::uint32_t status_crash = 2;  // the task's worker died: crash_wire + text
inline constexpr std::uint32_t ack_refused = 0;   // another build
inline constexpr std::uint32_t ack_ok = 1;
inline constexpr std::uint32_t ack_init_failed = 2;  // the initializer threw; text = its message

struct task_wire {
  std::uint64_t id;
  std::int64_t thunk;
  // The call's retry_policy (has_retry), retried by the rank's own pool;
  // else that pool's retries (rank_pool_wire) apply.
  std::uint64_t retries;
  std::uint32_t has_retry;
  std::uint32_t retry_on_timeout;
};
struct result_wire {
  std::uint64_t id;
  std::uint32_t status;
  std::uint32_t pad;
};
/// The pool_options a worker rank builds its own process_pool with.
struct rank_pool_wire {
  std::uint64_t workers;  // 0: the rank's CPUs (its affinity mask)
  std::uint64_t max_tasks_per_worker;
  std::uint64_t max_worker_rss;
  std::int64_t task_timeout_ms;
  std::int64_t start_timeout_ms;
  std::uint64_t max_restarts;
  std::int64_t restart_period_ms;
  std::uint64_t ring_bytes;
  std::uint64_t address_space;
  std::uint64_t cpu_seconds;
  std::uint64_t open_files;
  std::uint64_t arena_keep;
  std::uint32_t start_method;  // coproc::start_method
  std::uint32_t idle_priority;
  std::int64_t stop_grace_ms;
  std::uint64_t retries;
  std::uint32_t retry_timeouts;
  std::uint32_t pad;
};
struct hello_wire {
  std::int64_t anchor_offset;  // image_id::anchor_offset: equal builds agree on it
  std::int64_t initializer;    // pool_options::initializer's code offset (if has_initializer)
  std::uint64_t max_result;    // pool_options::max_payload
  std::uint32_t has_initializer;
  std::uint32_t pad;
  rank_pool_wire pool;
};
struct cancel_wire {
  std::uint64_t id;
};
/// How the worker that ran a task ended (exit_status), ahead of the text.
struct crash_wire {
  std::int32_t exited;
  std::int32_t code;
  std::int32_t signal;
  std::int32_t core_dumped;
  std::int64_t max_rss_kb;
};
/// A worker rank's own pool, sent whenever its workers change.
struct stats_wire {
  std::uint64_t workers_alive;
  std::uint64_t worker_crashes;
  std::uint64_t respawns;
  std::uint64_t tasks_retried;
};
// The largest body one MPI message carries (its count is an int).
inline constexpr std::size_t message_limit = static_cast<std::size_t>(INT_MAX) - 64;
struct ack_wire {
  std::uint32_t ok;
  std::int32_t pid;
  std::uint64_t workers;  // the workers of the rank's pool: its task slots
};

/// Spins a little while work is expected soon, then sleeps longer and longer
/// (up to 1 ms): an idle rank must not take a CPU from the ranks that work.
class backoff {
 public:
  void reset() noexcept { rounds_ = 0; }
  bool spinning() const noexcept { return rounds_ < spin_rounds; }
  std::chrono::microseconds next_sleep() noexcept {
    ++rounds_;
    if (spinning()) {
      return std::chrono::microseconds(0);
    }
    auto k = std::min<std::uint32_t>(rounds_ - spin_rounds, 7);
    return std::chrono::microseconds(8u << k);  // 8 us .. 1 ms
  }

 private:
  static constexpr std::uint32_t spin_rounds = 2000;
  std::uint32_t rounds_ = 0;
};

inline void sleep_for(std::chrono::microseconds d) {
  if (d.count() == 0) {
    return;
  }
  timespec ts{0, static_cast<long>(d.count()) * 1000};
  ::nanosleep(&ts, nullptr);
}

inline std::vector<std::byte> message(const void* head, std::size_t head_size,
                                      std::string_view tail) {
  std::vector<std::byte> m(head_size + tail.size());
  std::memcpy(m.data(), head, head_size);
  if (!tail.empty()) {  // an empty view's data() may be null, which memcpy may not take
    std::memcpy(m.data() + head_size, tail.data(), tail.size());
  }
  return m;
}

/// The worker ranks' loop: serves rank 0's sessions until it says stop;
/// returns the rank's exit status (rank_worker.cpp).
int rank_worker_loop();

}  // namespace coproc::detail
