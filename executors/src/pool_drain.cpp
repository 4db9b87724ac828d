// The parent side of a process_pool, completion half: the doorbell, the
// bounded poll of the result rings, and the drain of each worker's result
// frames (slot_channel::receive) into the ledger, whose completions the
// doorbell handler delivers once it released the pool's lock (locked(true, ...)).

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>

#include "coproc/executors/detail/emit_credit.hpp"
#include "coproc/ipc/detail/peer_spin.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/detail/sleep_flag.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "pool_core.hpp"

namespace coproc::detail {
bool pool_core::any_results() const {
  return drain_all_ || ready_.any();
}

// The rings the workers marked; every ring when the periodic check asked
// (a task may have cleared other workers' marks).
void pool_core::drain() {
  if (drain_all_) {
    drain_all_ = false;
    ready_.take(workers_.size(), [](std::size_t) {});
    for (auto& w : workers_) {
      drain(*w);
    }
    return;
  }
  ready_.take(workers_.size(), [&](std::size_t i) { drain(*workers_[i]); });
}

// A frame no worker writes fails the task the worker runs and replaces it.
// A streaming task's values are handed to its reader once per drain (one
// wake-up for a batch), and always before the task's own end.
void pool_core::drain(worker_rec& w) {
  task_op* emitting = nullptr;  // the task whose values this drain holds
  w.channel.receive(
      [&](const result_header& h, std::span<const std::byte> body, bool valid) {
        if (h.status == result_emitted) {
          emitting = take_emitted(w, h, body, valid, emitting);
          return;
        }
        if (h.id == initializer_failure_id && h.status == result_exception && valid) {
          try {
            w.init_error = decode_from<remote_error>(body).what();
          } catch (...) {
            w.init_error = "an exception that did not decode";
          }
        }
        task_op* op = w.inflight_op(h.id);
        if (op == nullptr) {
          return;  // withdrawn, timed out, or an id the worker made up
        }
        if (op == emitting) {
          emitting = nullptr;  // its end publishes what it holds
        }
        remove_inflight(w, op);
        if (!valid) {
          ledger_.fail(op, error(coproc::errc::frame_corrupt, "result frame larger than its ring"));
        } else {
          finish(w, op, h, body);
        }
      },
      [&] { fail_corrupt_worker(w); });
  if (emitting != nullptr) {
    publish_emitted(w, emitting);
  }
}

// One value of a streaming task, kept by its op until publish_emitted().
// Returns the task that now holds values of this drain.
task_op* pool_core::take_emitted(worker_rec& w, const result_header& h,
                                 std::span<const std::byte> body, bool valid, task_op* emitting) {
  if (emitting == nullptr || emitting->id != h.id) {
    if (emitting != nullptr && !publish_emitted(w, emitting)) {
      emitting = nullptr;
    }
    task_op* op = w.inflight_op(h.id);
    if (op == nullptr) {
      return emitting;  // a task already ended (cancelled, timed out) or a made-up id
    }
    emitting = op;
  }
  if (!valid) {
    fail_emitter(w, emitting, error(coproc::errc::frame_corrupt, "emitted frame past its ring"));
    return nullptr;
  }
  try {
    emitting->emitted(body);
  } catch (...) {
    fail_emitter(w, emitting, std::current_exception());
    return nullptr;
  }
  return emitting;
}

bool pool_core::publish_emitted(worker_rec& w, task_op* op) {
  try {
    op->publish_emitted();
    return true;
  } catch (...) {
    fail_emitter(w, op, std::current_exception());
    return false;
  }
}

// A value that does not decode, or past the reader's credit: the worker
// broke the protocol (or its task the ring). Its task fails, it is replaced.
void pool_core::fail_emitter(worker_rec& w, task_op* op, std::exception_ptr why) {
  remove_inflight(w, op);
  kill(w, op->id);
  ledger_.fail(op, std::move(why));
}

void pool_core::stream_read(std::uint64_t id, std::uint64_t read) {
  std::lock_guard lock(mutex_);
  task_op* op = ledger_.find(id);
  if (op == nullptr || op->worker < 0) {
    return;  // ended, or not sent yet: a new task starts with a full buffer
  }
  slot_shared& shared = *workers_[static_cast<std::size_t>(op->worker)]->channel.shared;
  emit_credit(shared.emit_grant, shared.emit_bell).grant(id, read + options_.stream_buffer);
}

void pool_core::fail_corrupt_worker(worker_rec& w) {
  if (w.killing) {
    return;
  }
  std::uint64_t running = w.channel.shared->running_id.load(std::memory_order_acquire);
  task_op* op = w.inflight_op(running);
  if (op == nullptr && !w.inflight.empty()) {
    // running_id is the worker's to write too: when it names no task in
    // flight, the oldest one (a worker takes frames in order) is blamed.
    op = w.inflight.front();
    running = op->id;
  }
  kill(w, running);
  if (op != nullptr) {
    remove_inflight(w, op);
    ledger_.fail(op, error(coproc::errc::frame_corrupt, "worker wrote a corrupt result frame"));
  }
}

void pool_core::remove_inflight(worker_rec& w, task_op* op) {
  w.inflight.erase(std::find(w.inflight.begin(), w.inflight.end(), op));
  w.channel.release(op->seq);
  if (op->id == w.stopping_id) {
    end_stop(w);
  }
  loads_.update(w, true);  // relieved: likely still spinning for its next task
  spawn_the_rest();        // the first task is back: the others may fork now
}

void pool_core::finish(worker_rec& w, task_op* op, const result_header& h,
                       std::span<const std::byte> body) {
  // An average of recent send-to-result times decides whether spinning pays.
  std::int64_t latency = monotonic_ns() - op->sent_ns;
  recent_latency_ns_ += (latency - recent_latency_ns_) / 8;
  std::int64_t run = std::clamp<std::int64_t>(h.run_ns, 0, long_task_ns);  // the worker's word
  recent_run_ns_ += (run - recent_run_ns_) / 8;
  start_failures_ = 0;  // a worker ran a task: starts do not always fail
  if (op->stopped == stop_reason::none) {
    ledger_.complete(op, h.status == result_value, body);
    return;
  }
  // Asked to stop, it returned within the grace: its worker lives on, and
  // its caller gets what it did inside the error.
  auto outcome = std::make_shared<task_outcome>();
  outcome->finished = true;
  if (h.status == result_value) {
    try {
      op->keep_value(body, *outcome);
    } catch (...) {
      outcome->exception = std::current_exception();  // a value that did not decode
    }
  } else {
    outcome->exception = task_ledger::task_exception(body);
  }
  fail_stopped(op, std::move(outcome));
  arm_timeout(w);  // the deadline of the worker's next task
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
  sleep_flag sleeping(header_->parent_sleeping);
  sleeping.announce();
  if (ready || any_results()) {
    sleeping.cancel();
    if (!drain_posted_) {
      drain_posted_ = true;
      asio::post(ex_, [self = shared_from_this()] {
        self->locked(true, [&] {
          self->drain_posted_ = false;
          self->on_doorbell();
        });
      });
    }
    return;
  }
  if (doorbell_armed_) {
    return;
  }
  // A read, not a wait then a read: Asio re-arms every wait with an
  // epoll_ctl(MOD), where a read is tried at once (a doorbell already rung
  // costs no epoll at all) and otherwise waits on the fd's registration.
  doorbell_armed_ = true;
  doorbell_->async_read_some(asio::buffer(&doorbell_count_, sizeof doorbell_count_),
                             [self = shared_from_this()](std::error_code ec, std::size_t) {
                               self->locked(true, [&] {
                                 self->doorbell_armed_ = false;
                                 if (ec || self->closed()) {
                                   self->listen_or_rest();
                                   return;
                                 }
                                 self->on_doorbell();
                               });
                             });
}

// Waking a sleeping loop from another CPU costs tens of microseconds here,
// far more than a short task. So when a task is running on another CPU and
// recent tasks came back within the spin budget, poll the result rings for
// at most that long before sleeping. Never when the worker shares this CPU:
// spinning would only keep it from running. Only the worker sent a task
// last is looked at: the cost stays the same in a large pool.
bool pool_core::spin_for_results(int cpu) {
  if (recent_latency_ns_ > loop_spin_budget.count() || last_sent_ == nullptr) {
    return false;
  }
  bool remote_busy = !last_sent_->inflight.empty() && last_sent_->cpu() != cpu;
  if (!remote_busy) {
    return false;
  }
  return spin_until(loop_spin_budget, [this] { return any_results(); });
}

void pool_core::on_doorbell() {
  if (closed()) {
    return;
  }
  sleep_flag(header_->parent_sleeping).cancel();
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
