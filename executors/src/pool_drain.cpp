// The parent side of a process_pool, completion half: the doorbell, the
// bounded poll of the result rings, the drain of each worker's result frames
// and the delivery of finished tasks outside the pool's lock.

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>

#include "coproc/ipc/detail/peer_spin.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "pool_core.hpp"

namespace coproc::detail {
bool pool_core::any_results() const {
  for (const auto& w : workers_) {
    // A corrupt ring reads as not empty for ever: its worker is being killed.
    if (!w->view.results.empty() && !w->view.results.corrupt()) {
      return true;
    }
  }
  return false;
}

void pool_core::drain() {
  for (auto& w : workers_) {
    drain(*w);
  }
}

void pool_core::drain(worker_rec& w) {
  bool popped = false;
  for (;;) {
    std::span<std::byte> frame = w.view.results.try_peek();
    if (frame.data() == nullptr) {
      break;
    }
    if (frame.size() < sizeof(result_header)) {
      // The worker wrote what no worker writes: fail the task it runs and
      // replace it.
      w.view.results.pop();
      popped = true;
      fail_corrupt_worker(w);
      continue;
    }
    result_header h;
    std::memcpy(&h, frame.data(), sizeof h);
    std::span<const std::byte> body;
    bool valid =
        h.in_arena ? h.body_size <= w.view.arena_bytes : h.body_size <= frame.size() - sizeof h;
    if (valid) {
      body = h.in_arena ? std::span<const std::byte>(w.view.out_arena, h.body_size)
                        : std::span<const std::byte>(frame.subspan(sizeof h, h.body_size));
    }
    if (h.id == initializer_failure_id && h.status == result_exception && valid) {
      try {
        w.init_error = decode_from<remote_error>(body).what();
      } catch (...) {
        w.init_error = "an exception that did not decode";
      }
    }
    auto it = std::find_if(w.inflight.begin(), w.inflight.end(),
                           [&](task_op* op) { return op->id == h.id; });
    if (it != w.inflight.end()) {
      task_op* op = *it;
      remove_inflight(w, op);
      if (!valid) {
        ++stats_.tasks_failed;
        op->fail(error(coproc::errc::frame_corrupt, "result frame larger than its ring"));
      } else {
        finish(w, op, h, body);
      }
    }
    w.view.results.pop();
    popped = true;
    if (h.in_arena) {
      w.view.shared->out_arena_busy.store(0, std::memory_order_release);
      futex_wake(w.view.shared->out_arena_busy);
    }
  }
  if (w.view.results.corrupt()) {
    fail_corrupt_worker(w);
  }
  if (popped) {
    w.view.results.notify_producer();
  }
}

void pool_core::fail_corrupt_worker(worker_rec& w) {
  if (w.killing) {
    return;
  }
  std::uint64_t running = w.view.shared->running_id.load(std::memory_order_acquire);
  auto it = std::find_if(w.inflight.begin(), w.inflight.end(),
                         [&](task_op* op) { return op->id == running; });
  if (it == w.inflight.end() && !w.inflight.empty()) {
    // running_id is the worker's to write too: when it names no task in
    // flight, the oldest one (a worker takes frames in order) is blamed.
    it = w.inflight.begin();
    running = (*it)->id;
  }
  kill(w, running);
  if (running != 0 && it != w.inflight.end()) {
    task_op* op = *it;
    remove_inflight(w, op);
    ++stats_.tasks_failed;
    op->fail(error(coproc::errc::frame_corrupt, "worker wrote a corrupt result frame"));
  }
}

void pool_core::remove_inflight(worker_rec& w, task_op* op) {
  w.inflight.erase(std::find(w.inflight.begin(), w.inflight.end(), op));
  ops_.erase(op->id);
  if (op->in_arena && w.arena_busy && w.arena_seq == op->seq) {
    w.arena_busy = false;
  }
}

void pool_core::finish(worker_rec&, task_op* op, const result_header& h,
                       std::span<const std::byte> body) {
  // An average of recent send-to-result times decides whether spinning pays.
  std::int64_t latency = monotonic_ns() - op->sent_ns;
  recent_latency_ns_ += (latency - recent_latency_ns_) / 8;
  start_failures_ = 0;  // a worker ran a task: starts do not always fail
  op->hold_delivery = holding_;
  if (h.status == result_value) {
    ++stats_.tasks_completed;
    op->complete(body);
  } else {
    ++stats_.tasks_failed;
    try {
      op->fail(to_exception_ptr(decode_from<remote_error>(body)));
    } catch (...) {
      op->fail(std::current_exception());
    }
  }
  if (holding_) {
    (held_tail_ != nullptr ? held_tail_->next_held : held_head_) = op;
    held_tail_ = op;
  }
}

namespace {

// Hands held completions to their handlers, outside the pool's lock: a
// handler whose executor runs in this thread (a coroutine on this io_context)
// resumes at once instead of through another reactor turn, which on one core
// is a non-blocking epoll_wait per result. If a handler throws, the rest are
// posted before the exception leaves, as Asio lets it, through run().
void deliver_held(task_op* op) {
  while (op != nullptr) {
    task_op* next = op->next_held;
    try {
      op->deliver(true);
    } catch (...) {
      while (next != nullptr) {
        task_op* after = next->next_held;
        next->deliver(false);
        next = after;
      }
      throw;
    }
    op = next;
  }
}

}  // namespace

// on_doorbell with its completions held; the caller holds the lock and
// delivers what this returns once it has released it.
task_op* pool_core::doorbell_turn() {
  struct holding {
    bool& flag;
    explicit holding(bool& f) : flag(f) { flag = true; }
    ~holding() { flag = false; }  // also if on_doorbell throws: the held go out next turn
  } hold(holding_);
  on_doorbell();
  held_tail_ = nullptr;
  return std::exchange(held_head_, nullptr);
}

// Announces that the parent sleeps (workers then ring the eventfd), re-checks
// the rings after a full fence, and keeps one wait on the eventfd armed.
void pool_core::wait_doorbell() {
  if (closed()) {
    return;
  }
  int cpu = current_cpu();
  header_->parent_cpu.store(cpu, std::memory_order_relaxed);
  bool ready = spin_for_results(cpu);
  header_->parent_sleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ready || any_results()) {
    header_->parent_sleeping.store(0, std::memory_order_relaxed);
    if (!drain_posted_) {
      drain_posted_ = true;
      asio::post(ex_, [self = shared_from_this()] {
        task_op* held = nullptr;
        {
          std::lock_guard lock(self->mutex_);
          self->drain_posted_ = false;
          held = self->doorbell_turn();
        }
        deliver_held(held);
      });
    }
    return;
  }
  if (doorbell_armed_) {
    return;
  }
  doorbell_armed_ = true;
  doorbell_->async_wait(
      asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](std::error_code ec) {
        task_op* held = nullptr;
        {
          std::lock_guard lock(self->mutex_);
          self->doorbell_armed_ = false;
          if (ec || self->closed()) {
            self->listen_or_rest();
            return;
          }
          std::uint64_t count;
          [[maybe_unused]] ssize_t n = ::read(self->doorbell_fd_.get(), &count, sizeof count);
          held = self->doorbell_turn();
        }
        deliver_held(held);
      });
}

// Waking a sleeping loop from another CPU costs tens of microseconds here,
// far more than a short task. So when a task is running on another CPU and
// recent tasks came back within the spin budget, poll the result rings for
// at most that long before sleeping. Never when the worker shares this CPU:
// spinning would only keep it from running.
bool pool_core::spin_for_results(int cpu) {
  if (recent_latency_ns_ > loop_spin_budget.count()) {
    return false;
  }
  bool remote_busy = false;
  for (const auto& w : workers_) {
    remote_busy =
        remote_busy ||
        (!w->inflight.empty() && w->view.shared->worker_cpu.load(std::memory_order_relaxed) != cpu);
  }
  if (!remote_busy) {
    return false;
  }
  return spin_until(loop_spin_budget, [this] { return any_results(); });
}

void pool_core::on_doorbell() {
  if (closed()) {
    return;
  }
  header_->parent_sleeping.store(0, std::memory_order_relaxed);
  drain();
  pump();
  maybe_finish_shutdown();
  listen_or_rest();
}

// running_id, consumed and retiring are the worker's to write: a task that
// overwrote them before its worker died would be sent again and again. The
// oldest task in flight at a worker that left without being killed by the
// pool is charged with the death; at the third it fails. (A worker that
// retires legitimately leaves its oldest untaken task to be the first its
// replacement takes: three in a row need two more deaths before any run.)

}  // namespace coproc::detail
