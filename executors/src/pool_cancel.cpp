// The parent side of a process_pool, what ends a task early: cancellation
// (a queued task withdrawn, a running one's worker killed), task timeouts,
// failing everything, and the pool's teardown (in its creator, and in a
// forked child that only lets go of its copy).

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>

#include "coproc/executors/detail/emit_credit.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/detail/nosigpipe.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "pool_core.hpp"

namespace coproc::detail {
namespace {
constexpr const char* cancelled_what = "process_pool: task cancelled";
}  // namespace

bool pool_core::charge_death(const worker_rec& w, task_op& op, std::uint64_t oldest_id) {
  constexpr std::uint8_t deaths_before_failing = 3;
  if (w.killing || op.id != oldest_id) {
    return false;
  }
  return ++op.deaths >= deaths_before_failing;
}

// What a worker's own exit code means, for the task's error message.
std::string pool_core::own_reason(const exit_status& status) {
  if (!status.exited) {
    return "";
  }
  switch (status.code) {
    case worker_exit_corrupt_frame:
      return ": it found its shared ring overwritten";
    case worker_exit_lost_parent:
      return ": its doorbell fd was gone (a task closed it)";
    case worker_exit_orphaned:
      return ": its zygote was gone";
    default:
      return "";
  }
}

// A worker that left on finding a ring overwritten fails its task as corrupt.
coproc::errc pool_core::death_errc(const exit_status& status) {
  return status.exited && status.code == worker_exit_corrupt_frame ? coproc::errc::frame_corrupt
                                                                   : coproc::errc::worker_crashed;
}

void pool_core::kill(worker_rec& w, std::uint64_t target) {
  w.killing = true;
  w.kill_target = target;
  loads_.update(w, false);
  if (w.pidfd) {
    ::syscall(SYS_pidfd_send_signal, w.pidfd.get(), SIGKILL, nullptr, 0);
  }
}

void pool_core::cancel(std::uint64_t id) {
  locked(false, [&] {
    withdraw(id);
    listen_or_rest();
  });
}

// Cancels task `id`: a queued task is dropped; a task in a worker's ring but
// not taken is withdrawn (the worker skips its frame); a running task's
// worker is killed, or with a grace the task is asked to stop first. A
// result already published wins over the cancellation; a task already asked
// to stop is left to its grace.
void pool_core::withdraw(std::uint64_t id) {
  task_op* op = ledger_.find(id);
  if (op == nullptr || op->stopped != stop_reason::none) {
    return;
  }
  auto aborted =
      std::make_exception_ptr(std::system_error(asio::error::operation_aborted, cancelled_what));
  constexpr auto cancelled = task_ledger::ending::cancelled;
  if (op->worker < 0) {
    ledger_.withdraw_queued(op);
    ledger_.fail(op, aborted, cancelled);
    return;
  }
  worker_rec& w = *workers_[static_cast<std::size_t>(op->worker)];
  if (w.channel.withdraw({op->state, op->seq})) {
    remove_inflight(w, op);
    ledger_.fail(op, aborted, cancelled);
    return;
  }
  drain(w);
  if (ledger_.find(id) == nullptr || ask_to_stop(w, *op, stop_reason::cancelled)) {
    return;
  }
  remove_inflight(w, op);
  kill(w, id);
  ledger_.fail(op, aborted, cancelled);
}

void pool_core::arm_timeout(worker_rec& w) {
  if (options_.task_timeout.count() == 0 || w.timer_armed || w.inflight.empty()) {
    return;
  }
  std::int64_t started = w.channel.shared->started_ns.load(std::memory_order_relaxed);
  bool running = w.channel.shared->running_id.load(std::memory_order_relaxed) != 0;
  auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.task_timeout);
  auto left = running ? timeout - std::chrono::nanoseconds(monotonic_ns() - started) : timeout;
  // started_ns is the worker's to write: a time in the future must not
  // stretch the wait past one timeout.
  arm_timer(w, std::clamp(left, std::chrono::nanoseconds(0), timeout));
}

// The worker's one timer (see worker_rec::timer): a grace's end while a task
// is asked to stop, else the running task's deadline.
void pool_core::arm_timer(worker_rec& w, std::chrono::nanoseconds after) {
  if (!w.timer) {
    w.timer = std::make_unique<asio::steady_timer>(ex_);
  }
  w.timer->expires_after(after);
  w.timer_armed = true;
  w.timer->async_wait([self = shared_from_this(), &w, gen = w.timer_gen](std::error_code ec) {
    self->locked(false, [&] {
      if (gen != w.timer_gen) {
        return;  // disarmed since: a later arm_timer owns the timer
      }
      w.timer_armed = false;
      if (!ec && !self->closed()) {
        if (w.stopping_id != 0) {
          self->on_grace_end(w);
        } else {
          self->on_timeout(w);
        }
        self->listen_or_rest();
      }
    });
  });
}

// A resting pool's workers need no deadline, and a pending wait would keep
// io_context::run() from returning for a whole task_timeout.
void pool_core::disarm_timeout(worker_rec& w) {
  if (w.timer_armed) {
    w.timer_armed = false;
    ++w.timer_gen;
    w.timer->cancel();
  }
}

void pool_core::on_timeout(worker_rec& w) {
  drain(w);
  std::uint64_t running = w.channel.shared->running_id.load(std::memory_order_acquire);
  std::int64_t started = w.channel.shared->started_ns.load(std::memory_order_acquire);
  auto elapsed = std::chrono::nanoseconds(monotonic_ns() - started);
  task_op* op = w.inflight_op(running);
  if (op != nullptr && elapsed >= options_.task_timeout && !w.killing) {
    if (ask_to_stop(w, *op, stop_reason::timed_out)) {
      return;
    }
    remove_inflight(w, op);
    std::string why = timeout_what();
    exit_status killed;  // the worker's end is the pool's SIGKILL, sent now
    killed.signal = SIGKILL;
    std::string reason = "worker " + std::to_string(w.pid) + " killed: " + why + " (task_timeout)";
    kill(w, running);
    if (retry_after(*op, killed, reason, attempt_end::timeout)) {
      ledger_.requeue({op});
      pump();
      return;
    }
    ledger_.fail(op, error(coproc::errc::task_timeout, attempts_text(*op, why)));
    return;
  }
  arm_timeout(w);
}

// With a grace (pool_options::stop_grace), the running task `op` is asked to
// stop (the slot's stop word names it: this_task::stop_requested() in the
// worker) and its worker kept until the grace ends, instead of killed now.
// The worker gets no new task meanwhile. False without a grace, or when the
// worker is being killed anyway.
bool pool_core::ask_to_stop(worker_rec& w, task_op& op, stop_reason why) {
  if (options_.stop_grace.count() == 0 || w.killing) {
    return false;
  }
  op.stopped = why;
  w.stopping_id = op.id;
  w.channel.shared->stop_id.store(op.id, std::memory_order_release);
  // An emitter waiting for its reader's credit looks again, and stops.
  emit_credit(w.channel.shared->emit_grant, w.channel.shared->emit_bell).wake();
  loads_.update(w, false);
  disarm_timeout(w);
  arm_timer(w, options_.stop_grace);
  return true;
}

// The task asked to stop left the worker (its result came, or it failed
// otherwise): the worker's timer goes back to deadlines.
void pool_core::end_stop(worker_rec& w) {
  w.stopping_id = 0;
  disarm_timeout(w);
}

// The grace passed: a result published meanwhile still wins; otherwise the
// worker is killed as it is without a grace.
void pool_core::on_grace_end(worker_rec& w) {
  drain(w);
  task_op* op = w.stopping_id == 0 ? nullptr : ledger_.find(w.stopping_id);
  if (op == nullptr) {
    return;
  }
  remove_inflight(w, op);
  kill(w, op->id);
  fail_stopped(op, std::make_shared<const task_outcome>());
}

// A task asked to stop ends with task_stopped_error, under the code it gets
// without a grace, carrying what it did (`outcome`).
void pool_core::fail_stopped(task_op* op, std::shared_ptr<const task_outcome> outcome) {
  bool cancelled = op->stopped == stop_reason::cancelled;
  std::string what = std::string(cancelled ? cancelled_what : timeout_what()) +
                     (outcome->finished ? " (it returned within stop_grace)"
                                        : " (it did not return within stop_grace)");
  auto code = cancelled ? make_error_code(asio::error::operation_aborted)
                        : make_error_code(coproc::errc::task_timeout);
  ledger_.fail(op, std::make_exception_ptr(task_stopped_error(code, what, std::move(outcome))),
               cancelled ? task_ledger::ending::cancelled : task_ledger::ending::failed);
}

std::string pool_core::timeout_what() const {
  return "task ran past " + std::to_string(options_.task_timeout.count()) + " ms";
}

void pool_core::fail_all(const std::exception_ptr& e) {
  for (auto& w : workers_) {
    if (!w->inflight.empty() && w->st != worker_rec::state::dead) {
      kill(*w, 0);
    }
    w->inflight.clear();
    end_stop(*w);  // a grace left armed would keep run() from returning
    loads_.update(*w, false);
  }
  ledger_.fail_all(e);
}

void pool_core::close(bool drop_completions) noexcept {
  try {
    locked(false, [&] { close_locked(drop_completions); });
  } catch (...) {
    // Only posting can throw here (bad_alloc); a destructor must not.
  }
}

void pool_core::close_locked(bool drop_completions) {
  if (closed()) {
    return;
  }
  if (::getpid() != owner_) {
    close_foreign();
    return;
  }
  state_ = pool_state::closed;
  for (auto& w : workers_) {
    if (w->pidfd) {
      ::syscall(SYS_pidfd_send_signal, w->pidfd.get(), SIGKILL, nullptr, 0);
    }
  }
  if (zygote_cmd_) {
    zygote_command c{zygote_stop, 0};
    [[maybe_unused]] ssize_t n = write_nosigpipe(zygote_cmd_.get(), &c, sizeof c);
    zygote_cmd_.reset();
  }
  // The zygote kills and reaps its workers on the stop command; give it a
  // moment, then make sure (its death takes the workers along by their death signal).
  if (zygote_) {
    pollfd p{zygote_.pidfd(), POLLIN, 0};
    ::poll(&p, 1, 500);
  }
  zygote_.kill_and_reap();
  if (relay_) {
    relay_->stop(drop_completions);  // the workers are gone: their last lines
  }
  for (auto& w : workers_) {
    w->inflight.clear();
    if (w->timer) {
      w->timer->cancel();
    }
  }
  if (drop_completions) {
    ledger_.drop_all();
  } else {
    ledger_.fail_all(std::make_exception_ptr(
        std::system_error(asio::error::operation_aborted, "process_pool destroyed")));
  }
  if (doorbell_) {
    doorbell_->cancel();
  }
  if (reports_) {
    reports_->descriptor().cancel();
  }
  if (rest_timer_) {
    rest_timer_->cancel();
  }
}

// The pool's destructor in a process that did not create it (a plain fork()
// child, a daemonizing host's parent half): the zygote and the workers are
// the creator's, reached through inherited fds. Nothing is signalled,
// stopped or waited for, and the event loop's kernel objects (an epoll or
// io_uring instance the fork shares with the creator) are not touched: the
// objects registered there are left unreleased and only their fds closed.
// The mapping goes with this object. Pending tasks are the creator's too:
// dropped without completion.
void pool_core::close_foreign() noexcept {
  state_ = pool_state::closed;
  if (relay_) {
    relay_->abandon();  // its thread is the creator's
  }
  for (auto& w : workers_) {
    w->pidfd.reset();
    w->inflight.clear();
    (void)w->timer.release();
  }
  zygote_cmd_.reset();
  if (zygote_) {
    // child_process would SIGKILL and reap through its pidfd: point that fd
    // number at a harmless file first (the kill and the wait then fail).
    ::dup3(doorbell_fd_.get(), zygote_.pidfd(), O_CLOEXEC);
  }
  if (doorbell_) {
    ::close(doorbell_->native_handle());
    (void)doorbell_.release();
  }
  if (reports_) {
    ::close(reports_->descriptor().native_handle());
    (void)reports_.release();
  }
  ledger_.forget_all();
}

}  // namespace coproc::detail
