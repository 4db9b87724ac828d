// The parent side of a process_pool, submit half: the backend under
// basic_pool, admission, choice of a worker and the task frame into its ring.
// The rest of pool_core (pool_core.hpp): the completion drain
// (pool_drain.cpp), cancellation, timeouts and teardown (pool_cancel.cpp),
// worker deaths, restarts and shutdown (pool_lifecycle.cpp). A submit is
// handled on the caller's thread under the pool's mutex (no post on the hot
// path); I/O handlers run on the pool's executor under the same mutex. Only
// completions are posted, to each handler's own executor.

#include "coproc/executors/process_pool.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <asio/execution/context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/query.hpp>
#include <asio/read.hpp>
#include <atomic>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coproc/ipc/detail/peer_spin.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/child_process.hpp"
#include "coproc/runtime/detail/nosigpipe.hpp"
#include "coproc/runtime/detail/sleep_flag.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "coproc/runtime/pipe_reader.hpp"
#include "pool_core.hpp"
#include "pool_registry.hpp"

namespace coproc::detail {
namespace {

std::size_t round_pow2(std::size_t n) {
  std::size_t p = 4096;
  while (p < n) {
    p <<= 1;
  }
  return p;
}

/// Tasks in flight per worker: enough to keep a busy worker fed between two
/// parent wake-ups, few enough that a slow task delays little else.

/// How long an idle pool keeps listening before it lets io_context::run() return.
constexpr std::chrono::milliseconds rest_interval{20};

}  // namespace

pool_core::pool_core(const asio::any_io_executor& ex, pool_options options)
    : ex_(ex),
      options_(std::move(options)),
      // Accepted tasks (queued or in a worker's ring) stay within
      // queue_capacity plus one running task per worker.
      ledger_(std::max<std::size_t>(options_.queue_capacity, 1) + options_.workers),
      restarts_(options_.max_restarts, options_.restart_period) {
  if (options_.workers == 0) {
    throw std::invalid_argument("coproc::process_pool: workers must be at least 1");
  }
  if (options_.queue_capacity == 0) {
    options_.queue_capacity = 1;
  }
  geometry_ = {options_.workers, round_pow2(options_.ring_bytes), options_.max_payload};
  region_ = mapped_region::create(geometry_.total(), "coproc-pool");
  header_ = new (region_.data()) pool_header;
  header_->parent_sleeping.store(0, std::memory_order_relaxed);
  header_->parent_cpu.store(-1, std::memory_order_relaxed);
  header_->anchor = reinterpret_cast<std::intptr_t>(&image_anchor);
  for (std::size_t i = 0; i < options_.workers; ++i) {
    reset_slot(region_.data(), geometry_, i);
    auto w = std::make_unique<worker_rec>();
    w->index = i;
    w->channel = slot_at(region_.data(), geometry_, i);
    workers_.push_back(std::move(w));
  }
  touched_.reserve(workers_.size());
  ready_ = ready_set_at(region_.data(), geometry_);
  doorbell_fd_.reset(check_syscall(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd"));
  config_ = {region_.data(), geometry_, doorbell_fd_.get(), &options_, region_.fd()};
  if (options_.worker_output != worker_output::inherit) {
    relay_ = std::make_unique<output_relay>(options_.worker_output, options_.on_worker_output, ex_);
    config_.output_fd = relay_->worker_fd();
  }
  // The zygote is forked now, before this pool has any ring or thread.
  start_zygote();
  if (relay_) {
    relay_->start();
  }
  doorbell_ = std::make_unique<asio::posix::stream_descriptor>(
      ex_,
      check_syscall(::fcntl(doorbell_fd_.get(), F_DUPFD_CLOEXEC, 0), "fcntl(F_DUPFD_CLOEXEC)"));
}

// One worker first: the zygote forks the others once it reported that one
// (spawn_the_rest), so that the first task does not wait behind the whole
// pool's forks (64 of them took 4 ms on 2 cores).
void pool_core::open() {
  locked(false, [&] {
    spawn(*workers_[0]);
    deferred_spawns_ = workers_.size() > 1;
  });
}

void pool_core::spawn(worker_rec& w) {
  zygote_command c{zygote_spawn, static_cast<std::uint32_t>(w.index)};
  w.st = worker_rec::state::spawning;
  w.spawned_ns = monotonic_ns();
  loads_.update(w, false);  // behind those forked before it
  if (!zygote_cmd_ || write_nosigpipe(zygote_cmd_.get(), &c, sizeof c) != sizeof c) {
    on_zygote_lost("cannot reach the zygote");
  }
}

void pool_core::start(task_op* op) {
  locked(false, [&] { accept(op); });
}

void pool_core::accept(task_op* op) {
  if (!accepts_tasks(state_)) {
    ledger_.refuse(op, state_ == pool_state::broken ? broken_error_
                                                    : error(coproc::errc::pool_stopped,
                                                            "process_pool: submit after shutdown"));
    return;
  }
  // A full queue holds the submit back (its caller stays suspended) instead
  // of growing: the ledger admits waiting tasks in order as the queue drains.
  ledger_.accept(op);
  op->bind_cancellation(*this);
  // While the parent is busy here it does not need the eventfd: a worker that
  // finishes meanwhile (on this very CPU, it runs as soon as it is woken)
  // leaves its result for the check in wait_doorbell, saving two syscalls.
  sleep_flag(header_->parent_sleeping).cancel();
  pump();
  // A lone task sent to a worker on this CPU: woken by pump(), the worker
  // ran it before pump() returned, so its result is taken here, under the
  // lock already held, instead of by a drain posted to the loop (a pass of
  // the caller's loop less per round trip). Not otherwise: results then come
  // back in batches, and draining in every submit halved the rate of 256
  // submits in flight.
  if (ledger_.size() == 1 && last_sent_ != nullptr && last_sent_->cpu() == current_cpu() &&
      any_results()) {
    drain();
  }
  if (listening_) {
    wait_doorbell();
  } else {
    start_listening();
  }
}

// The pool listens (doorbell and zygote reports) only while it has work: a
// pending wait would otherwise keep io_context::run() from returning. It stops
// listening once a check (every rest_interval) finds it idle, so that a busy
// pool does not pay a cancel and a re-arm per task. Reports that arrive while
// it rests wait in the pipe until the next task.
void pool_core::listen_or_rest() {
  if (closed() || !listening_) {
    return;
  }
  wait_doorbell();
  read_reports();
}

void pool_core::start_listening() {
  if (listening_ || closed()) {
    return;
  }
  listening_ = true;
  listen_or_rest();
  arm_rest_check();
}

void pool_core::arm_rest_check() {
  if (!rest_timer_) {
    return;  // the io_context is gone
  }
  rest_timer_->expires_after(rest_interval);
  rest_timer_->async_wait([self = shared_from_this()](std::error_code ec) {
    if (!ec) {
      self->locked(false, [&] { self->on_rest_check(); });
    }
  });
}

// Idle: no task, and no report still owed by the zygote (a replacement on its
// way, or the exit of a worker that retired after its last task). Resting
// earlier would leave that report unread until the next submit, with stats()
// showing a worker missing meanwhile.
bool pool_core::idle() const {
  if (!ledger_.empty() || state_ == pool_state::draining || state_ == pool_state::stopping) {
    return false;
  }
  return std::none_of(workers_.begin(), workers_.end(), [](const auto& w) {
    return w->st == worker_rec::state::spawning ||
           (w->st == worker_rec::state::running &&
            w->channel.shared->retiring.load(std::memory_order_acquire) != 0);
  });
}

void pool_core::on_rest_check() {
  if (closed()) {
    return;
  }
  if (!idle()) {
    check_starts();
    rebalance();
    arm_rest_check();
    // A doorbell a worker failed to ring (its fd closed by a task, or the
    // flags or the ready set overwritten in shared memory) delays a result
    // by one check at most, never for ever: this drain looks at every ring.
    drain_all_ = true;
    wait_doorbell();
    return;
  }
  listening_ = false;
  give_back_arenas();
  // A task timer left armed (it is not disarmed per task: a busy pool would
  // pay a cancel and a re-arm each time) would keep io_context::run() from
  // returning for up to a whole task_timeout.
  for (auto& w : workers_) {
    disarm_timeout(*w);
  }
  sleep_flag(header_->parent_sleeping).cancel();
  if (doorbell_armed_) {
    doorbell_->cancel();
  }
  if (reports_armed_ && reports_) {
    reports_->descriptor().cancel();
  }
}

// Idle, so no body is in any arena: the pages past arena_keep that large
// payloads used since the last rest go back to the kernel, for the parent and
// every worker at once (they all map the same memfd).
void pool_core::give_back_arenas() {
  std::size_t keep = slot_channel::round(options_.arena_keep);
  for (auto& w : workers_) {
    for (std::span<std::byte> spare : w->channel.take_spare(keep)) {
      if (spare.empty()) {
        continue;
      }
      auto offset = static_cast<off_t>(spare.data() - region_.bytes().data());
      if (::fallocate(region_.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                      static_cast<off_t>(spare.size())) != 0) {
        ::madvise(spare.data(), spare.size(), MADV_REMOVE);  // the same, through the mapping
      }
    }
  }
}

// A pool with more workers than CPUs, fed short tasks, keeps about as many
// workers busy as there are CPUs and queues further tasks behind them: one
// more sleeping worker woken per task would cost the parent a futex wake each
// and gain no parallelism (issue 19). rebalance() moves tasks out from
// behind one that turned out long.
//
// A second task before the first worker was reported forked starts the
// others now: a burst of tasks at start must not all queue at worker 0.
worker_rec* pool_core::pick(const task_op& op) {
  bool pack = workers_.size() > cpus_ && !op.in_arena && recent_run_ns_ < short_task_ns &&
              loads_.busy() >= cpus_;
  worker_rec* w = pack ? loads_.pick(false, 1) : nullptr;
  if (w == nullptr) {
    w = loads_.pick(op.in_arena);
  }
  if (deferred_spawns_ && (w == nullptr || !w->inflight.empty())) {
    spawn_the_rest();
    w = loads_.pick(op.in_arena);
  }
  return w;
}

// Tasks queued behind one that has run for long_task_ns go back to the
// queue while workers idle, so pump() sends them to those: packing (pick)
// must not leave a task waiting behind a long one. Runs at the pool's check,
// every rest_interval while tasks are out.
void pool_core::rebalance() {
  if (loads_.idle() == 0) {
    return;
  }
  std::vector<task_op*> moved;
  for (auto& w : workers_) {
    take_queued(*w, moved);
  }
  if (!moved.empty()) {
    ledger_.requeue(moved);
    pump();
  }
}

// Appends to `out` the frames `w` has not taken, withdrawn, when the task it
// runs is long.
void pool_core::take_queued(worker_rec& w, std::vector<task_op*>& out) {
  if (w.inflight.size() < 2 || w.st != worker_rec::state::running || w.killing) {
    return;
  }
  const slot_shared& shared = *w.channel.shared;
  std::uint64_t running = shared.running_id.load(std::memory_order_acquire);
  std::int64_t ran = monotonic_ns() - shared.started_ns.load(std::memory_order_relaxed);
  if (running == 0 || ran < long_task_ns) {
    return;
  }
  recent_run_ns_ = std::max(recent_run_ns_, long_task_ns);  // stop packing now
  const std::size_t first = out.size();
  for (task_op* op : w.inflight) {
    if (op->id != running && op->stopped == stop_reason::none &&
        w.channel.withdraw({op->state, op->seq})) {
      out.push_back(op);
    }
  }
  for (std::size_t i = first; i < out.size(); ++i) {
    remove_inflight(w, out[i]);
    out[i]->unsend();
  }
}

// A queued task that cannot be sent fails alone; the pool goes on.
void pool_core::reject(task_op* op, const std::exception_ptr& e) {
  ledger_.dispatched();
  ledger_.fail(op, e);
}

void pool_core::pump() {
  // One doorbell per worker per batch, not one per task. The marks of the
  // last batch are cleared here, not after it rang: a batch may end by an
  // exception.
  for (worker_rec* w : touched_) {
    w->touched = false;
  }
  touched_.clear();
  while (task_op* op = ledger_.front()) {
    std::size_t size = 0;
    try {
      size = op->body_size();  // runs the arguments' save() in counting mode: may throw
    } catch (...) {
      reject(op, std::current_exception());
      continue;
    }
    if (size > options_.max_payload) {
      reject(op, error(coproc::errc::payload_too_large,
                       "task arguments of " + std::to_string(size) + " bytes"));
      continue;
    }
    op->in_arena = workers_[0]->channel.needs_arena(size);
    worker_rec* w = pick(*op);
    bool sent = false;
    try {
      sent = w != nullptr && send(*w, op, size);
    } catch (...) {
      // The encoding threw half-way: the frame was reserved but not
      // committed, the arena not yet claimed, so the ring holds nothing of it.
      reject(op, std::current_exception());
      continue;
    }
    if (!sent) {
      if (w != nullptr && w->killing) {
        continue;  // found corrupt: pick() skips it now
      }
      break;
    }
    ledger_.dispatched();
    if (!w->touched) {
      w->touched = true;
      touched_.push_back(w);
    }
  }
  header_->parent_cpu.store(current_cpu(), std::memory_order_relaxed);
  for (worker_rec* w : touched_) {
    w->channel.notify_worker();
    arm_timeout(*w);
  }
}

bool pool_core::send(worker_rec& w, task_op* op, std::size_t size) {
  auto frame = w.channel.send(op->id, op->thunk, size, op->in_arena,
                              [op](std::span<std::byte> body) { op->encode_body(body); });
  if (frame.state == nullptr) {
    if (w.channel.tasks_corrupt()) {
      fail_corrupt_worker(w);  // its tail word is not on our terms
    }
    return false;
  }
  op->state = frame.state;
  op->seq = frame.seq;
  op->sent_ns = monotonic_ns();
  op->worker = static_cast<int>(w.index);
  w.inflight.push_back(op);
  loads_.update(w, false);
  last_sent_ = &w;
  return true;
}

local_backend::local_backend(const asio::any_io_executor& ex, pool_options options)
    : workers_(options.workers),
      stream_buffer_(options.stream_buffer),
      core_(std::make_shared<pool_core>(ex, std::move(options))) {
  asio::use_service<pool_registry>(asio::query(ex, asio::execution::context)).add(core_);
  core_->open();
}

local_backend::~local_backend() {
  core_->close();
}

void local_backend::start(task_op* op) {
  core_->start(op);
}

void local_backend::shutdown(shutdown_mode mode, std::function<void()> done) {
  core_->shutdown(mode, std::move(done));
}

pool_stats local_backend::stats() const {
  return core_->stats();
}

}  // namespace coproc::detail
