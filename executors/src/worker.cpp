// The worker loop: takes task frames from its slot's ring, runs them, writes
// result frames, and rings the parent's eventfd only when the parent sleeps.

#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <malloc.h>
#include <stdio_ext.h>

#include <cstdio>
#include <limits>
#include <system_error>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/zygote.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/errc.hpp"

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
        view_(config.base, config.geometry, slot) {}

  [[noreturn]] void run() {
    if (header_->anchor != reinterpret_cast<std::intptr_t>(&image_anchor)) {
      ::_exit(worker_exit_bad_image);
    }
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
        ::_exit(worker_exit_init_failed);
      }
    }
    view_.shared->worker_cpu.store(::sched_getcpu(), std::memory_order_relaxed);
    std::uint64_t done = 0;
    for (;;) {
      std::span<std::byte> frame = view_.tasks.try_peek();
      if (frame.data() == nullptr) {
        if (view_.tasks.corrupt()) {
          ::_exit(worker_exit_corrupt_frame);
        }
        wait_for_task();
        continue;
      }
      if (run_one(frame)) {
        ++done;
        if (should_retire(done)) {
          retire();
        }
      }
    }
  }

  // result_writer: where the running task's result goes.
  std::span<std::byte> reserve(std::size_t n) override {
    if (sizeof(result_header) + n <= inline_limit(view_.results)) {
      std::span<std::byte> frame = view_.results.reserve_wait(sizeof(result_header) + n);
      out_in_arena_ = false;
      out_frame_ = frame.data();
      return frame.subspan(sizeof(result_header), n);
    }
    if (n > view_.arena_bytes) {
      throw std::system_error(coproc::errc::payload_too_large,
                              "result of " + std::to_string(n) + " bytes");
    }
    // The arena holds one result at a time: wait until the parent took the last.
    auto& busy = view_.shared->out_arena_busy;
    while (busy.load(std::memory_order_acquire) != 0) {
      futex_wait(busy, 1);
    }
    busy.store(1, std::memory_order_relaxed);
    out_in_arena_ = true;
    return {view_.out_arena, n};
  }

  void commit(std::size_t n) override {
    flush_task_output();
    if (out_in_arena_) {
      out_frame_ = view_.results.reserve_wait(sizeof(result_header)).data();
    }
    result_header h{current_id_, status_, out_in_arena_ ? 1u : 0u, n};
    std::memcpy(out_frame_, &h, sizeof h);
    view_.results.commit(out_in_arena_ ? sizeof h : sizeof h + n);
    out_in_arena_ = false;
  }

 private:
  /// Runs the frame's task; false when the parent had cancelled it.
  bool run_one(std::span<std::byte> frame) {
    auto* task = reinterpret_cast<task_header*>(frame.data());
    std::uint32_t expected = task_queued;
    bool mine =
        task->state.compare_exchange_strong(expected, task_taken, std::memory_order_acq_rel);
    auto& shared = *view_.shared;
    if (mine) {
      shared.running_id.store(task->id, std::memory_order_relaxed);
      shared.started_ns.store(monotonic_ns(), std::memory_order_relaxed);
    }
    shared.consumed.fetch_add(1, std::memory_order_release);
    if (!mine) {
      view_.tasks.pop();
      return false;
    }
    current_id_ = task->id;
    status_ = result_value;
    try {
      std::span<const std::byte> body = task_body(*task, frame);
      auto thunk = reinterpret_cast<thunk_fn>(const_cast<void*>(checked_code_address(task->thunk)));
      thunk(body, *this);
    } catch (...) {
      status_ = result_exception;
      write_value(coproc::capture_current_exception());
    }
    view_.tasks.pop();
    shared.running_id.store(0, std::memory_order_relaxed);
    notify_parent();
    trim_pending_ = true;
    return true;
  }

  std::span<const std::byte> task_body(const task_header& task, std::span<std::byte> frame) {
    if (task.in_arena != 0) {
      if (task.body_size > view_.arena_bytes) {
        throw std::system_error(coproc::errc::frame_corrupt, "task body larger than the arena");
      }
      return {view_.in_arena, task.body_size};
    }
    if (task.body_size > frame.size() - sizeof(task_header)) {
      throw std::system_error(coproc::errc::frame_corrupt, "task body larger than its frame");
    }
    return frame.subspan(sizeof(task_header), task.body_size);
  }

  /// Rings the parent's eventfd if it announced that it sleeps.
  void notify_parent() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (header_->parent_sleeping.load(std::memory_order_relaxed) != 0 &&
        header_->parent_sleeping.exchange(0, std::memory_order_relaxed) != 0) {
      std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(config_.doorbell_fd, &one, sizeof one);
    }
  }

  /// Spins briefly while the parent runs on another CPU (it answers in well
  /// under a microsecond there), then sleeps on the ring's futex. Spinning
  /// while the parent shares this CPU would only delay it.
  void wait_for_task() {
    int parent_cpu = header_->parent_cpu.load(std::memory_order_relaxed);
    int spin = (parent_cpu >= 0 && parent_cpu != ::sched_getcpu()) ? spin_rounds : 0;
    if (trim_pending_) {
      // Keep the freed heap for the next task unless the worker stays idle:
      // then give it back, so an idle worker holds little memory.
      timespec idle{0, 100'000'000};
      if (view_.tasks.wait_not_empty(spin, &idle)) {
        return;
      }
      ::malloc_trim(0);
      trim_pending_ = false;
    }
    view_.tasks.wait_not_empty(spin);
    view_.shared->worker_cpu.store(::sched_getcpu(), std::memory_order_relaxed);
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
    view_.shared->retiring.store(1, std::memory_order_release);
    ::_exit(worker_exit_retired);
  }

  static constexpr int spin_rounds = 4000;  // about 20-40 us of pause instructions

  worker_config config_;
  pool_header* header_;
  slot_view view_;
  std::uint64_t current_id_ = 0;
  std::uint32_t status_ = result_value;
  bool out_in_arena_ = false;
  std::byte* out_frame_ = nullptr;
  bool trim_pending_ = false;  // the heap may hold memory freed by a task
};

}  // namespace

void image_anchor() noexcept {}

const void* checked_code_address(std::int64_t offset) {
  const void* p = code_address(offset);
  const auto& allowed = allowed_code();
  if (allowed.count == 0) {
    return p;
  }
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  for (int i = 0; i < allowed.count; ++i) {
    if (a >= allowed.begin[i] && a < allowed.end[i]) {
      return p;
    }
  }
  throw std::system_error(coproc::errc::function_mismatch,
                          "the task's code is not in the main executable (a function of a "
                          "shared library): start_method::spawn workers run a separately "
                          "exec'd image where only the executable's code has known addresses");
}

void worker_main(const worker_config& config, std::size_t slot) {
  worker w(config, slot);
  w.run();
}

}  // namespace coproc::detail
