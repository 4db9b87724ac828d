#pragma once
// pool_core: the parent side of a process_pool, shared by process_pool.cpp
// (submit, dispatch, completion drain, cancellation, timeouts) and
// pool_lifecycle.cpp (zygote reports, worker deaths, broken pools, zygote
// restarts, start_timeout, shutdown, stats). Private to executors/src.

#include <sys/types.h>
#include <sys/wait.h>

#include <algorithm>
#include <asio/any_io_executor.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "coproc/executors/detail/pool_layout.hpp"
#include "coproc/executors/detail/pool_lifecycle.hpp"
#include "coproc/executors/detail/task_ledger.hpp"
#include "coproc/executors/detail/task_op.hpp"
#include "coproc/executors/detail/zygote.hpp"
#include "coproc/executors/detail/zygote_reports.hpp"
#include "coproc/executors/pool_options.hpp"
#include "coproc/executors/pool_stats.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/runtime/child_process.hpp"
#include "coproc/runtime/detail/usable_cpus.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "coproc/runtime/mapped_region.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "output_relay.hpp"
#include "worker_loads.hpp"

namespace coproc::detail {

/// Tasks sent to one worker and not finished, at most.
inline constexpr std::size_t pipeline_depth = 32;
static_assert(pipeline_depth <= 64, "worker_loads keeps one bit per level in a 64-bit word");

/// Recent tasks that ran shorter than this, on average, cost less than
/// waking a sleeping worker for each across CPUs (30-50 us here, see
/// peer_spin.hpp): a pool with more workers than CPUs then queues them
/// behind its busy workers (pool_core::pick).
inline constexpr std::int64_t short_task_ns = 20'000;
/// A task running this long has tasks queued behind it moved to idle
/// workers (pool_core::rebalance).
inline constexpr std::int64_t long_task_ns = 1'000'000;

inline std::exception_ptr error(coproc::errc e, const std::string& what) {
  return std::make_exception_ptr(std::system_error(e, what));
}

inline exit_status to_exit_status(const zygote_report& r) {
  exit_status s;
  s.exited = WIFEXITED(r.wait_status);
  s.code = s.exited ? WEXITSTATUS(r.wait_status) : 0;
  s.signal = WIFSIGNALED(r.wait_status) ? WTERMSIG(r.wait_status) : 0;
  s.core_dumped = WIFSIGNALED(r.wait_status) && WCOREDUMP(r.wait_status);
  s.max_rss_kb = r.max_rss_kb;
  return s;
}

struct worker_rec {
  enum class state { spawning, running, dead };
  std::size_t index = 0;
  slot_channel channel;  // the slot's protocol; its parent end's state (arena, frames sent)
  state st = state::dead;
  pid_t pid = 0;
  unique_fd pidfd;
  std::deque<task_op*> inflight;  // sent, not finished, in send order
  // Not a fourth `state`: a kill is asked for while the worker is spawning
  // too (it is sent once the spawn is reported), and a killed worker is
  // still running until its pidfd says otherwise.
  bool killing = false;
  std::uint64_t kill_target = 0;
  // Its one timer: the running task's deadline (task_timeout) or, while that
  // task is asked to stop, the end of its grace (stop_grace), a later
  // deadline of the same task. So a grace is disarmed, and made stale by
  // timer_gen, wherever a deadline is.
  std::unique_ptr<asio::steady_timer> timer;
  std::uint64_t stopping_id = 0;  // the running task asked to stop, 0 when none
  bool timer_armed = false;
  std::uint64_t timer_gen = 0;    // a disarmed timer's late handler is stale
  std::int64_t spawned_ns = 0;    // when its spawn was asked for (start_timeout)
  std::int64_t exit_seen_ns = 0;  // when its pidfd first showed it gone, unreported
  std::string init_error;         // what its initializer threw, as it told us
  load_links loads;               // its place in pool_core::loads_
  bool touched = false;           // sent to during the current pump(): ring it once

  /// The CPU the worker last ran on, as it says (a hint: it writes the word).
  int cpu() const { return channel.shared->worker_cpu.load(std::memory_order_relaxed); }

  /// The task in flight here with `id`, or null (ended, withdrawn, or an id
  /// the worker made up).
  task_op* inflight_op(std::uint64_t id) const {
    auto it = std::find_if(inflight.begin(), inflight.end(),
                           [id](const task_op* op) { return op->id == id; });
    return it == inflight.end() ? nullptr : *it;
  }
};

class pool_core final : public std::enable_shared_from_this<pool_core>, public task_canceller {
 public:
  pool_core(const asio::any_io_executor& ex, pool_options options);
  ~pool_core() { close(); }

  void open();
  /// Stops the workers and the zygote; pending operations complete with
  /// operation_aborted, or with `drop_completions` are destroyed uncalled.
  void close(bool drop_completions = false) noexcept;
  /// Called by pool_registry while the io_context is being destroyed.
  void on_context_gone() noexcept;
  void close_foreign() noexcept;
  void start(task_op* op);
  void cancel(std::uint64_t id) override;
  void stream_read(std::uint64_t id, std::uint64_t read) override;
  void shutdown(shutdown_mode mode, std::function<void()> done);
  pool_stats stats();

 private:
  pool_stats stats_locked();

  void accept(task_op* op);
  void pump();
  worker_rec* pick(const task_op& op);
  void rebalance();
  void take_queued(worker_rec& w, std::vector<task_op*>& out);
  bool send(worker_rec& w, task_op* op, std::size_t size);
  void drain();
  void drain(worker_rec& w);
  void finish(worker_rec& w, task_op* op, const result_header& h, std::span<const std::byte> body);
  task_op* take_emitted(worker_rec& w, const result_header& h, std::span<const std::byte> body,
                        bool valid, task_op* emitting);
  bool publish_emitted(worker_rec& w, task_op* op);
  void fail_emitter(worker_rec& w, task_op* op, std::exception_ptr why);
  void wait_doorbell();
  bool spin_for_results(int cpu);
  void on_doorbell();
  void close_locked(bool drop_completions);
  /// Runs `step` under the lock, then what it settled outside the lock.
  /// `may_run_inline`: the caller is one of the pool's own handlers.
  template <class Step>
  void locked(bool may_run_inline, Step&& step) {
    deliveries out;
    {
      std::lock_guard lock(mutex_);
      step();
      out = ledger_.take_deliveries();
    }
    out.run(may_run_inline);
  }
  void read_reports();
  bool idle() const;
  void listen_or_rest();
  void start_listening();
  void arm_rest_check();
  void on_rest_check();
  void give_back_arenas();
  void on_report(const zygote_report& r);
  void spawn_the_rest();
  void poll_reports();
  void on_worker_exit(worker_rec& w, const exit_status& status);
  static bool charge_death(const worker_rec& w, task_op& op, std::uint64_t oldest_id);
  static coproc::errc death_errc(const exit_status& status);
  static std::string own_reason(const exit_status& status);
  bool release_worker(worker_rec& w, const exit_status& status);
  /// How a task's attempt ended, for retry_after: a crash of its worker, a
  /// kill past task_timeout, or an end that is never retried.
  enum class attempt_end { crash, timeout, final };
  static bool retryable(const exit_status& status);
  bool retry_after(task_op& op, const exit_status& status, const std::string& why, attempt_end end);
  static std::string attempts_text(const task_op& op, const std::string& why);
  static std::exception_ptr crash_error(const task_op& op, const exit_status& status,
                                        const std::string& why);
  std::string start_failure(const worker_rec& w, const exit_status& status) const;
  void start_zygote();
  void on_zygote_lost(const std::string& why);
  void check_starts();
  void break_pool(const std::exception_ptr& why);
  void finish_stop();
  void disarm_timeout(worker_rec& w);
  void reject(task_op* op, const std::exception_ptr& e);
  bool closed() const { return state_ == pool_state::closed; }
  void spawn(worker_rec& w);
  void kill(worker_rec& w, std::uint64_t target);
  void withdraw(std::uint64_t id);
  void arm_timeout(worker_rec& w);
  void arm_timer(worker_rec& w, std::chrono::nanoseconds after);
  void on_timeout(worker_rec& w);
  bool ask_to_stop(worker_rec& w, task_op& op, stop_reason why);
  void end_stop(worker_rec& w);
  void on_grace_end(worker_rec& w);
  void fail_stopped(task_op* op, std::shared_ptr<const task_outcome> outcome);
  std::string timeout_what() const;
  void fail_all(const std::exception_ptr& e);
  void maybe_finish_shutdown();
  void remove_inflight(worker_rec& w, task_op* op);
  void fail_corrupt_worker(worker_rec& w);
  bool any_results() const;

  asio::any_io_executor ex_;
  // Guards every member below: entry points run on callers' threads, handlers
  // on the io_context's threads. No user code runs under it (see
  // task_ledger.hpp), so a handler may submit again, or destroy the pool.
  mutable std::mutex mutex_;
  pool_options options_;
  task_ledger ledger_;
  pool_geometry geometry_;
  mapped_region region_;
  pool_header* header_ = nullptr;
  unique_fd doorbell_fd_;
  unique_fd zygote_cmd_;
  child_process zygote_;
  std::unique_ptr<zygote_reports> reports_;
  std::uint64_t reports_gen_ = 0;  // one per zygote: a stale wait's handler does nothing
  std::unique_ptr<asio::posix::stream_descriptor> doorbell_;
  std::unique_ptr<output_relay> relay_;  // pool_options::worker_output other than inherit
  worker_config config_;
  std::vector<std::unique_ptr<worker_rec>> workers_;
  std::vector<worker_rec*> touched_;  // sent to during the current pump()
  worker_loads loads_{pipeline_depth};
  ready_set ready_;                  // which result rings to drain (a hint: see ready_set.hpp)
  bool drain_all_ = false;           // the next drain looks at every ring, marked or not
  worker_rec* last_sent_ = nullptr;  // the worker that received the latest task
  bool deferred_spawns_ = false;     // open() forked one worker; the rest wait for its report
  // Not part of state_: each says that one asynchronous wait is outstanding
  // (on the eventfd, a posted drain, on the report pipe), so that at most one
  // of each is, whatever the lifecycle; listening_ says whether the pool
  // keeps them armed at all (it rests when idle, in every state but closed).
  bool doorbell_armed_ = false;
  std::uint64_t doorbell_count_ = 0;  // the eventfd's count, read and dropped
  bool drain_posted_ = false;
  bool reports_armed_ = false;
  bool listening_ = false;
  std::int64_t recent_latency_ns_ = 0;
  // The average of recent tasks' run times as their workers reported them
  // (a hint, clamped): pick() packs short tasks. It starts long: until
  // results show otherwise, tasks spread over every worker.
  std::int64_t recent_run_ns_ = long_task_ns;
  std::size_t cpus_ = usable_cpus();
  std::optional<asio::steady_timer> rest_timer_{std::in_place, ex_};  // reset with the context
  pool_state state_ = pool_state::running;
  std::exception_ptr broken_error_;  // what a broken pool fails tasks with
  restart_intensity restarts_;       // zygote deaths
  // Workers that died before they started since a worker last showed it had
  // started (a result, or a death after its start): a start that always
  // fails, not workers killed now and then while they start.
  std::size_t start_failures_ = 0;
  std::vector<std::function<void()>> shutdown_done_;  // every async_shutdown's handler
  pid_t owner_ = ::getpid();                          // only this process tears the pool down
};

}  // namespace coproc::detail
