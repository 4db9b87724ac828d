// The lifecycle side of pool_core: the zygote's reports, worker deaths,
// initializer failures and broken pools, zygote restarts within the restart
// intensity, the start_timeout watchdog, shutdown and stats (see
// docs/ARCHITECTURE.md, "Lifecycle, broken pools and restarts").

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/detail/nosigpipe.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/pipe_reader.hpp"
#include "pool_core.hpp"

namespace coproc::detail {

void pool_core::start_zygote() {
  auto [cmd_read, cmd_write] = make_pipe();
  auto [report_read, report_write] = make_pipe();
  pid_t pid = fork_zygote(config_, cmd_read.get(), report_write.get());
  zygote_ = child_process::adopt(pid);
  zygote_cmd_ = std::move(cmd_write);
  check_syscall(::fcntl(zygote_cmd_.get(), F_SETFL, O_NONBLOCK), "fcntl");
  reports_ = std::make_unique<zygote_reports>(ex_, std::move(report_read));
  ++reports_gen_;
  reports_armed_ = false;
}

// Waits for the report pipe to be readable, then reads what is there without
// blocking (stats() reads it the same way, so reports are never reordered).
void pool_core::read_reports() {
  if (reports_armed_ || closed() || !reports_) {
    return;
  }
  reports_armed_ = true;
  reports_->descriptor().async_wait(
      asio::posix::stream_descriptor::wait_read,
      [self = shared_from_this(), gen = reports_gen_](std::error_code ec) {
        self->locked(false, [&] {
          if (gen != self->reports_gen_) {
            return;  // the wait of a zygote that was replaced
          }
          self->reports_armed_ = false;
          if (self->closed()) {
            return;
          }
          if (ec != asio::error::operation_aborted) {
            self->poll_reports();
          }
          self->listen_or_rest();
        });
      });
}

void pool_core::poll_reports() {
  if (!reports_ || closed()) {
    return;
  }
  std::vector<zygote_report> got;
  bool open = reports_->read_available(got);
  std::uint64_t gen = reports_gen_;
  for (const zygote_report& r : got) {
    if (gen != reports_gen_) {
      return;  // the zygote was replaced meanwhile: the rest speak of its old workers
    }
    on_report(r);
  }
  if (!open && gen == reports_gen_) {
    on_zygote_lost("the pool's zygote process died");
  }
}

// The workers open() left for later, once the first one was forked.
void pool_core::spawn_the_rest() {
  if (!deferred_spawns_) {
    return;
  }
  deferred_spawns_ = false;
  if (state_ == pool_state::running || state_ == pool_state::draining) {
    for (auto& w : workers_) {
      if (w->st == worker_rec::state::dead && !w->killing) {
        spawn(*w);
      }
    }
  }
}

void pool_core::on_report(const zygote_report& r) {
  if (r.slot >= workers_.size()) {
    return;
  }
  worker_rec& w = *workers_[r.slot];
  switch (r.kind) {
    case report_spawned:
      w.pid = r.pid;
      w.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, r.pid, 0)));
      w.st = worker_rec::state::running;
      if (w.killing || state_ == pool_state::broken) {
        kill(w, w.kill_target);
      }
      if (w.inflight.empty()) {
        spawn_the_rest();  // else once its first task is back: the forks would slow it
      }
      break;
    case report_exited:
      on_worker_exit(w, to_exit_status(r));
      break;
    case report_spawn_failed:
      w.st = worker_rec::state::dead;
      loads_.update(w, false);
      break_pool(error(coproc::errc::pool_broken, "process_pool: fork of a worker failed: " +
                                                      std::system_category().message(r.error)));
      break;
    default:
      break;
  }
}

void pool_core::on_worker_exit(worker_rec& w, const exit_status& status) {
  bool bad_image = status.exited && status.code == worker_exit_bad_image;
  drain(w);  // first: an initializer's exception arrives as a result frame
  std::string failure = start_failure(w, status);
  bool started = release_worker(w, status);
  if (started) {
    start_failures_ = 0;
  }
  if (state_ == pool_state::stopping || state_ == pool_state::closed) {
    return;  // the zygote stops its workers
  }
  if (bad_image) {
    break_pool(error(coproc::errc::worker_crashed, "worker image mismatch"));
  } else if (!failure.empty()) {
    break_pool(error(coproc::errc::pool_broken, failure));
  } else if (!started && ++start_failures_ > options_.max_restarts) {
    break_pool(error(coproc::errc::pool_broken,
                     "process_pool: more than " + std::to_string(options_.max_restarts) +
                         " workers in a row (max_restarts) died before they started; the last "
                         "one " +
                         status.describe()));
  } else if (replaces_workers(state_, !ledger_.empty())) {
    ++ledger_.stats().respawns;
    // A drain goes on replacing workers (one that retired at
    // max_tasks_per_worker, say) while accepted tasks are left.
    spawn(w);
  }
  pump();
  maybe_finish_shutdown();
}

// Why a worker's death is an initializer failure, or empty when it is not:
// an initializer that threw, crashed or was killed before it returned
// (whatever its timing: the next worker would do the same).
std::string pool_core::start_failure(const worker_rec& w, const exit_status& status) const {
  bool started = w.channel.shared->ready.load(std::memory_order_acquire) != 0;
  if (started || w.killing || !options_.initializer) {
    return {};
  }
  std::string what =
      status.exited && status.code == worker_exit_init_failed
          ? "it threw " + (w.init_error.empty() ? std::string("an exception") : w.init_error)
          : "its worker was " + status.describe();
  return "process_pool: the pool's initializer failed in worker " + std::to_string(w.pid) + ": " +
         what;
}

// Accounts for a worker that is gone: results it published still count, its
// running task fails, the others go back to the queue, its slot is made new.
// True when it had started (its initializer returned) or was killed by us.
bool pool_core::release_worker(worker_rec& w, const exit_status& status) {
  drain(w);  // results published before the death still count
  auto& shared = *w.channel.shared;
  bool retired = status.success() && shared.retiring.load(std::memory_order_acquire) != 0;
  bool started = shared.ready.load(std::memory_order_acquire) != 0 || w.killing;
  std::uint64_t running = shared.running_id.load(std::memory_order_acquire);
  std::uint64_t consumed = shared.consumed.load(std::memory_order_acquire);
  std::vector<task_op*> requeue;
  std::string why = "worker " + std::to_string(w.pid) + " " + status.describe() + " (max RSS " +
                    std::to_string(status.max_rss_kb) + " KiB)" + own_reason(status);
  // Taken before the loop: failing a task below may free it.
  std::uint64_t oldest = w.inflight.empty() ? 0 : w.inflight.front()->id;
  for (task_op* op : w.inflight) {
    bool crashed_here =
        op->id == running && consumed > op->seq && !(w.killing && w.kill_target != op->id);
    // The three-deaths rule (a task that hides that it runs) fails at once:
    // only a death the task admitted to is retried, and never one the pool caused.
    auto end =
        crashed_here && !w.killing && retryable(status) ? attempt_end::crash : attempt_end::final;
    if (!crashed_here && !charge_death(w, *op, oldest)) {
      op->unsend();
      requeue.push_back(op);  // it had not run: not an attempt
    } else if (op->stopped != stop_reason::none) {
      // Asked to stop, it died before it returned: as if killed at the grace's end.
      fail_stopped(op, std::make_shared<const task_outcome>());
    } else if (retry_after(*op, status, why, end)) {
      requeue.push_back(op);
    } else {
      ledger_.fail(op, crash_error(*op, status, why));
    }
  }
  ledger_.requeue(requeue);
  if (!retired && !w.killing) {
    ++ledger_.stats().worker_crashes;
  }
  w.inflight.clear();
  end_stop(w);
  w.pidfd.reset();
  w.pid = 0;
  w.st = worker_rec::state::dead;
  w.killing = false;
  w.kill_target = 0;
  loads_.update(w, false);
  w.exit_seen_ns = 0;
  w.init_error.clear();
  reset_slot(region_.data(), geometry_, w.index);
  w.channel = slot_at(region_.data(), geometry_, w.index);  // its parent end afresh
  return started;
}

// The pool can no longer run tasks: every accepted task and every later
// submit fails with `why`, and live workers are stopped (a worker still being
// forked is stopped when its spawn is reported). A drain under way still
// completes, its tasks failed.
void pool_core::break_pool(const std::exception_ptr& why) {
  if (state_ == pool_state::running) {
    state_ = pool_state::broken;
    broken_error_ = why;  // the first reason: later workers only fail the same way
  }
  fail_all(why);
  for (auto& w : workers_) {
    if (w->st == worker_rec::state::running && !w->killing) {
      kill(*w, 0);
    }
  }
  maybe_finish_shutdown();  // a drain under way has nothing left to wait for
}

// The zygote is gone (killed, or hung and killed by check_starts): its
// workers die with it through their death signal. Their tasks are accounted
// as for any worker death, then a new zygote starts them again, within the
// restart intensity; past it, or if no zygote can be started, the pool is broken.
void pool_core::on_zygote_lost(const std::string& why) {
  if (state_ == pool_state::stopping || state_ == pool_state::closed || !reports_) {
    return;  // stopped on purpose, or already handled
  }
  reports_.reset();
  ++reports_gen_;
  reports_armed_ = false;
  zygote_cmd_.reset();
  zygote_.kill_and_reap();
  exit_status killed;
  killed.signal = SIGKILL;
  for (auto& w : workers_) {
    if (w->st == worker_rec::state::dead) {
      continue;
    }
    if (w->pidfd) {
      ::syscall(SYS_pidfd_send_signal, w->pidfd.get(), SIGKILL, nullptr, 0);
    }
    // Not a crash of its own, nor a start failure; but its running task
    // fails rather than runs again: it may be what killed the zygote
    // (kill(getppid(), SIGKILL)), and would do so once per restart.
    w->killing = true;
    w->kill_target = w->channel.shared->running_id.load(std::memory_order_acquire);
    release_worker(*w, killed);
  }
  if (!replaces_workers(state_, !ledger_.empty())) {
    maybe_finish_shutdown();  // broken, or a drain with nothing left: no new zygote
    return;
  }
  if (!restarts_.allow()) {
    break_pool(error(coproc::errc::pool_broken,
                     "process_pool: " + why + ", more than " +
                         std::to_string(restarts_.max_restarts()) + " restarts within " +
                         std::to_string(options_.restart_period.count()) +
                         " ms (max_restarts, restart_period)"));
    return;
  }
  try {
    start_zygote();
  } catch (const std::exception& e) {
    break_pool(error(coproc::errc::pool_broken,
                     "process_pool: " + why + ", and a new zygote did not start: " + e.what()));
    return;
  }
  std::uint64_t gen = reports_gen_;
  deferred_spawns_ = false;  // every slot now
  for (auto& w : workers_) {
    ++ledger_.stats().respawns;
    spawn(*w);
    if (gen != reports_gen_) {
      return;  // this zygote died at once too, and its successor spawned every slot
    }
  }
  pump();
  listen_or_rest();
}

// The bound on waiting for a worker (pool_options::start_timeout), checked
// while tasks wait: a worker whose initializer has not returned breaks the
// pool; a spawn or a death the zygote did not report in time means the zygote
// is stuck (stopped, say), so it is replaced as if it had died.
void pool_core::check_starts() {
  if (options_.start_timeout.count() == 0 || ledger_.empty() ||
      (state_ != pool_state::running && state_ != pool_state::draining)) {
    return;
  }
  std::int64_t now = monotonic_ns();
  std::int64_t limit =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.start_timeout).count();
  std::string ms = std::to_string(options_.start_timeout.count()) + " ms";
  for (auto& w : workers_) {
    if (w->st == worker_rec::state::dead || w->killing) {
      continue;
    }
    bool late = now - w->spawned_ns >= limit;
    if (w->st == worker_rec::state::spawning) {
      if (late) {
        on_zygote_lost("the pool's zygote did not fork a worker within " + ms);
        return;
      }
      continue;
    }
    if (w->channel.shared->ready.load(std::memory_order_acquire) == 0) {
      if (late) {
        std::string what = options_.initializer ? "the pool's initializer did not return"
                                                : "a worker did not start";
        kill(*w, 0);
        break_pool(error(coproc::errc::pool_broken, "process_pool: " + what + " within " + ms +
                                                        " (start_timeout) in worker " +
                                                        std::to_string(w->pid)));
        return;
      }
      continue;
    }
    // Only a worker holding tasks matters to a waiting task (and so the
    // check costs a poll per busy worker, not per worker).
    pollfd p{w->pidfd.get(), POLLIN, 0};
    if (!w->inflight.empty() && w->pidfd && ::poll(&p, 1, 0) == 1) {
      if (w->exit_seen_ns == 0) {
        w->exit_seen_ns = now;
      } else if (now - w->exit_seen_ns >= limit) {
        on_zygote_lost("the pool's zygote did not report a worker's exit within " + ms);
        return;
      }
    }
  }
}

// Every call's handler completes once the pool has stopped; a cancel after a
// drain fails what the drain had left (the escalation of process_pool.hpp).
void pool_core::shutdown(shutdown_mode mode, std::function<void()> done) {
  locked(false, [&] {
    shutdown_done_.push_back(std::move(done));
    if (closed()) {
      finish_stop();
      return;
    }
    if (state_ == pool_state::running || state_ == pool_state::broken) {
      state_ = pool_state::draining;
    }
    start_listening();
    if (mode == shutdown_mode::cancel) {
      fail_all(error(coproc::errc::pool_stopped, "process_pool: shut down"));
    }
    maybe_finish_shutdown();
  });
}

void pool_core::maybe_finish_shutdown() {
  if (state_ != pool_state::draining || shutdown_done_.empty() || !ledger_.empty()) {
    return;
  }
  state_ = pool_state::stopping;
  if (zygote_cmd_) {
    zygote_command c{zygote_stop, 0};
    [[maybe_unused]] ssize_t n = write_nosigpipe(zygote_cmd_.get(), &c, sizeof c);
    zygote_cmd_.reset();
  }
  if (!zygote_ || zygote_.status()) {
    finish_stop();
    return;
  }
  zygote_.async_wait_exit(ex_, [self = shared_from_this()](std::error_code, exit_status) {
    self->locked(false, [&] { self->finish_stop(); });
  });
}

// The shutdown handlers run once the lock is released.
void pool_core::finish_stop() {
  close_locked(false);
  for (auto& done : std::exchange(shutdown_done_, {})) {
    ledger_.pending().call(std::move(done));
  }
}

// True at any time: reports that already arrived are read first, whether or
// not the pool listens (an idle pool rests), and the live workers are counted
// from their records, never from a counter that could drift.
pool_stats pool_core::stats() {
  pool_stats s;
  locked(false, [&] { s = stats_locked(); });
  return s;
}

pool_stats pool_core::stats_locked() {
  poll_reports();
  pool_stats s = ledger_.stats();
  s.tasks_queued = ledger_.queued();
  s.tasks_waiting = ledger_.waiting();
  s.workers_alive = 0;
  for (const auto& w : workers_) {
    if (!w->inflight.empty()) {
      ++s.workers_busy;
    }
    if (w->st == worker_rec::state::running) {
      ++s.workers_alive;
      s.worker_pids.push_back(w->pid);
    }
  }
  return s;
}

}  // namespace coproc::detail
