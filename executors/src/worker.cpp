// The worker loop: takes task frames from its slot's ring, runs them, writes
// result frames, and rings the parent's eventfd only when the parent sleeps.

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <malloc.h>
#include <stdio_ext.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <system_error>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/emit_credit.hpp"
#include "coproc/executors/detail/task_stop.hpp"
#include "coproc/executors/detail/values_frame.hpp"
#include "coproc/executors/detail/zygote.hpp"
#include "coproc/ipc/detail/peer_spin.hpp"
#include "coproc/ipc/detail/segment.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/detail/child_setup.hpp"
#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/sleep_flag.hpp"
#include "coproc/runtime/errc.hpp"
#include "output_relay.hpp"

namespace coproc::detail {
namespace {

/// Resident set of this process in bytes (from /proc/self/statm).
std::size_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) {
    return 0;
  }
  unsigned long size = 0, resident = 0;
  int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

class worker final : public result_writer {
 public:
  worker(const worker_config& config, std::size_t slot)
      : config_(config),
        header_(reinterpret_cast<pool_header*>(config.base)),
        channel_(slot_at(config.base, config.geometry, slot)),
        ready_(ready_set_at(config.base, config.geometry)),
        slot_(slot),
        zygote_(::getppid()) {}

  [[noreturn]] void run() {
    // Whether this image is the parent's was decided by the zygote (a
    // foreign one exits its workers with worker_exit_bad_image before they
    // get here); the pool header's anchor is not read: tasks can write it.
    apply_limits(config_.options->limits);
    if (config_.options->idle_priority) {
      sched_param none{};
      ::sched_setscheduler(0, SCHED_IDLE, &none);
    }
    // Large payloads come from the heap rather than fresh mappings, so a
    // worker that decodes big arguments again and again reuses warm pages
    // instead of paying page faults and kernel zeroing every time.
    ::mallopt(M_MMAP_MAX, 0);
    ::mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
    if (config_.options->initializer) {
      try {
        config_.options->initializer();
      } catch (...) {
        report_initializer_failure();
      }
      rearm_death_signal();  // setuid in the initializer cleared it
    }
    // Shared buffers: a few mappings kept across tasks, and a returned
    // buffer held until the parent has read its result (see
    // docs/ARCHITECTURE.md, "Shared buffers").
    segment_cache_bound(segment_cache_entries);
    segment_pins_enable();
    channel_.shared->ready.store(1, std::memory_order_release);
    channel_.shared->worker_cpu.store(current_cpu(), std::memory_order_relaxed);
    std::uint64_t done = 0;
    for (;;) {
      std::span<std::byte> frame = channel_.next_task();
      if (frame.data() == nullptr) {
        if (channel_.tasks_corrupt()) {
          ::_exit(worker_exit_corrupt_frame);
        }
        wait_for_task();
        continue;
      }
      segment_pins_release(
          [this](std::uint64_t at) { return channel_.results.released_through(at); });
      if (run_one(frame)) {
        ++done;
        if (should_retire(done)) {
          retire();
        }
      }
    }
  }

  // result_writer: where the running task's result goes. A ring found
  // corrupt (its shared words overwritten, by this worker's task or another)
  // ends the worker: the parent fails the task with frame_corrupt and
  // replaces it.
  std::span<std::byte> reserve(std::size_t n) override {
    std::span<std::byte> out = channel_.reserve_result(n, recheck, [this] { return orphaned(); });
    if (out.data() == nullptr) {
      leave_on_lost_result();
    }
    return out;
  }

  void commit(std::size_t n) override {
    values_.seal();  // the parent reads past the task's values frame to its result
    flush_task_output();
    if (!channel_.commit_result(current_id_, status_, n, recheck, [this] { return orphaned(); })) {
      leave_on_lost_result();
    }
    segment_pins_tag(channel_.results.published());
  }

  // emit_sink: a streaming task's values, appended to the open values frame
  // of the result ring and visible to the parent at once (values_frame.hpp).
  std::byte* reserve_emitted(std::size_t n) override {
    const std::size_t most = slot_channel::inline_limit(channel_.results) - sizeof(result_header) -
                             values_frame::head_bytes;
    if (values_frame::record_bytes(n) > most) {
      throw std::system_error(coproc::errc::payload_too_large,
                              "emitted value of " + std::to_string(n) + " bytes (at most " +
                                  std::to_string(most - values_frame::size_bytes) + " per value)");
    }
    if (task_stop_requested() || !wait_for_emit_credit()) {
      return nullptr;  // asked to stop: nobody reads on (emitter.hpp)
    }
    if (!values_.fits(n)) {
      open_values_frame(
          std::min(most, std::max(values_frame::usual_records, values_frame::record_bytes(n))));
    }
    return values_.value_at();
  }

  void commit_emitted(std::size_t n) override {
    values_.append(n);
    ++emitted_;
    segment_pins_tag(channel_.results.published());
    notify_parent_of_value();
  }

 private:
  /// Seals the open values frame and publishes a new, empty one with room
  /// for `records` bytes of records.
  void open_values_frame(std::size_t records) {
    values_.seal();
    const std::size_t size = values_frame::head_bytes + records;
    std::span<std::byte> body =
        channel_.reserve_result(size, recheck, [this] { return orphaned(); });
    if (body.data() == nullptr) {
      leave_on_lost_result();
    }
    values_.open(body.data(), records);
    if (!channel_.commit_result(current_id_, result_emitted, size, recheck,
                                [this] { return orphaned(); })) {
      leave_on_lost_result();
    }
  }

  /// Whether the running task may emit one more value: at once while its
  /// reader keeps up, else once the parent granted more (emit_credit.hpp).
  bool wait_for_emit_credit() {
    const std::uint64_t buffer = config_.options->stream_buffer;
    emit_credit credit(channel_.shared->emit_grant, channel_.shared->emit_bell);
    if (emitted_ < credit.allowed(current_id_, buffer)) {
      return true;
    }
    // The reader's grant comes within microseconds while the parent runs on
    // another CPU: spin for it there rather than pay a futex sleep and wake.
    const int parent_cpu = header_->parent_cpu.load(std::memory_order_relaxed);
    if (peer_on_other_cpu(parent_cpu) && spin_until(blocking_spin_budget, [&] {
          return emitted_ < credit.allowed(current_id_, buffer) || task_stop_requested();
        })) {
      return !task_stop_requested();
    }
    return credit.wait(
        current_id_, emitted_, buffer, recheck, [] { return task_stop_requested(); },
        [this] {
          if (orphaned()) {
            ::_exit(worker_exit_orphaned);
          }
        });
  }

  /// Runs the frame's task; false when the parent had cancelled it.
  bool run_one(std::span<std::byte> frame) {
    if (!channel_.take(frame)) {
      return false;
    }
    current_id_ = reinterpret_cast<const task_header*>(frame.data())->id;
    status_ = result_value;
    emitted_ = 0;
    running_task.begin(&channel_.shared->stop_id, current_id_);  // this_task::stop_requested()
    try {
      std::span<const std::byte> body = channel_.task_body(frame);
      std::int64_t thunk_offset = reinterpret_cast<const task_header*>(frame.data())->thunk;
      auto thunk =
          reinterpret_cast<thunk_fn>(const_cast<void*>(checked_code_address(thunk_offset)));
      thunk(body, *this);
    } catch (...) {
      channel_.abandon_result();
      status_ = result_exception;
      write_value(coproc::capture_current_exception());
    }
    running_task.end();
    channel_.task_done();
    notify_parent();
    trim_pending_ = true;
    return true;
  }

  [[noreturn]] void leave_on_lost_result() {
    ::_exit(channel_.results_corrupt() ? worker_exit_corrupt_frame : worker_exit_orphaned);
  }

  /// Marks this slot in the ready set (the parent drains only marked rings),
  /// then rings the parent's eventfd if it announced that it sleeps. A worker
  /// whose doorbell is gone (a task closed its fds) cannot wake the parent
  /// any more: it leaves, and the parent, told by the zygote, takes the
  /// result already in the ring and forks a replacement.
  void notify_parent() {
    ready_.mark(slot_);  // before take()'s fence: a parent going to sleep sees it
    if (sleep_flag(header_->parent_sleeping).take()) {
      std::uint64_t one = 1;
      ssize_t n = retry_eintr([&] { return ::write(config_.doorbell_fd, &one, sizeof one); });
      if (n < 0 && errno != EAGAIN) {
        ::_exit(worker_exit_lost_parent);
      }
    }
  }

  /// The death signal is cleared by setuid and by a task's own prctl: armed
  /// again after the initializer, and whenever an idle worker's bounded
  /// sleep ends. Not after every task: prctl there cost 0.45 us of a 5.9 us
  /// round trip (bench_pool rtt --quick --cpu0: p50 5.85 -> 6.33 us), and a
  /// busy worker is covered otherwise: the zygote ends its workers' process
  /// groups when the host dies, and the host SIGKILLs its busy workers
  /// through their pidfds when the zygote dies.
  void rearm_death_signal() {
    if (!die_with_parent(zygote_)) {
      ::_exit(worker_exit_orphaned);
    }
  }

  /// The zygote (this worker's parent) is gone: by getppid, which changes
  /// once the kernel re-parented this process, death signal or not.
  bool orphaned() const { return ::getppid() != zygote_; }

  /// Spins briefly while the parent runs on another CPU (it answers in well
  /// under a microsecond there), then sleeps on the ring's futex. Spinning
  /// while the parent shares this CPU would only delay it.
  void wait_for_task() {
    int parent_cpu = header_->parent_cpu.load(std::memory_order_relaxed);
    int spin = peer_on_other_cpu(parent_cpu) ? worker_spin_rounds : 0;
    if (trim_pending_) {
      // Keep the freed heap for the next task unless the worker stays idle:
      // then give it back, so an idle worker holds little memory.
      timespec idle{0, 100'000'000};
      if (channel_.wait_for_task(spin, &idle)) {
        return;
      }
      ::malloc_trim(0);
      segment_cache_clear();
      segment_pins_release(
          [this](std::uint64_t at) { return channel_.results.released_through(at); });
      trim_pending_ = false;
    }
    // Before sleeping: a worker whose doorbell fd a task closed would leave
    // its next result unannounced.
    if (::fcntl(config_.doorbell_fd, F_GETFD) < 0) {
      ::_exit(worker_exit_lost_parent);
    }
    // Sleeps are bounded: an idle worker notices a dead zygote by itself
    // (even with its death signal cleared), and a wake-up lost to a task
    // that overwrote the ring's flags costs at most `recheck`.
    while (!channel_.wait_for_task(spin, &recheck)) {
      spin = 0;
      rearm_death_signal();  // a task may have cleared it; leaves if orphaned
    }
    channel_.shared->worker_cpu.store(current_cpu(), std::memory_order_relaxed);
  }

  /// notify_parent() for a streaming task's value, without its atomic OR on
  /// the ready set's line (which the parent takes at every drain) while this
  /// slot's mark is still there: values come fast, and that OR was the
  /// costliest part of an emission. Why a set mark is enough: after the
  /// fence, the frame is visible to any read that comes later; the parent
  /// takes the mark (an exchange later than this read) before it drains the
  /// ring, so its drain sees the frame; and it cannot be asleep with the
  /// mark set (it re-checks the set after announcing its sleep, and the
  /// marker rang it otherwise).
  void notify_parent_of_value() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!ready_.marked(slot_)) {
      notify_parent();
    }
  }

  static void apply_limits(const worker_limits& limits) {
    auto set = [](int resource, std::size_t value) {
      if (value != 0) {
        rlimit r{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
        if (resource == RLIMIT_CPU) {
          r.rlim_max = r.rlim_cur + 1;  // SIGXCPU first, SIGKILL one second later
        }
        ::setrlimit(resource, &r);
      }
    };
    set(RLIMIT_AS, limits.address_space);
    set(RLIMIT_CPU, limits.cpu_seconds);
    set(RLIMIT_NOFILE, limits.open_files);
  }

  /// The initializer threw (called in its catch block): its exception goes
  /// to the parent as a result frame of no task, then the worker leaves.
  [[noreturn]] void report_initializer_failure() {
    current_id_ = initializer_failure_id;
    status_ = result_exception;
    try {
      write_value(coproc::capture_current_exception());
    } catch (...) {
      channel_.abandon_result();  // the exit status alone still says what happened
    }
    ::_exit(worker_exit_init_failed);
  }

  bool should_retire(std::uint64_t done) const {
    const pool_options& o = *config_.options;
    return (o.max_tasks_per_worker != 0 && done >= o.max_tasks_per_worker) ||
           (o.max_worker_rss != 0 && resident_bytes() > o.max_worker_rss);
  }

  /// What the task printed reaches its file before its result does: the pool
  /// may kill this worker (shutdown, destruction, cancellation) at any moment
  /// after, and stdout into a pipe or file is fully buffered. Checked per task
  /// (two loads); flushed only when something is pending.
  static void flush_task_output() noexcept {
    if (::__fpending(stdout) != 0 || ::__fpending(stderr) != 0) {
      std::fflush(nullptr);
    }
  }

  [[noreturn]] void retire() {
    std::fflush(nullptr);  // an orderly exit: _exit does not flush stdio
    channel_.shared->retiring.store(1, std::memory_order_release);
    ::_exit(worker_exit_retired);
  }

  /// Longest sleep before a worker checks its zygote again (issue 13.8: an
  /// orphan leaves within 1 s).
  static constexpr timespec recheck{0, 250'000'000};
  /// Shared-buffer segments a worker keeps mapped between tasks.
  static constexpr std::size_t segment_cache_entries = 8;

  worker_config config_;
  pool_header* header_;
  slot_channel channel_;
  ready_set ready_;
  std::size_t slot_;
  std::uint64_t current_id_ = 0;
  std::uint32_t status_ = result_value;
  std::uint64_t emitted_ = 0;  // values the running task emitted
  values_frame values_;        // its open values frame, if any
  bool trim_pending_ = false;  // the heap may hold memory freed by a task
  pid_t zygote_;               // this worker's parent
};

}  // namespace

void worker_main(const worker_config& config, std::size_t slot) {
  if (config.output_fd >= 0) {
    redirect_worker_output(config.output_fd);  // before the initializer: its lines too
  }
  worker w(config, slot);
  w.run();
}

}  // namespace coproc::detail
