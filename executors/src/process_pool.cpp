// The parent side of a process_pool: queue, dispatch into worker rings,
// completion drain, cancellation and timeouts (worker deaths, restarts and
// shutdown are pool_lifecycle.cpp; the class is pool_core.hpp). A
// submit is handled on the caller's thread under the pool's mutex (no post
// on the hot path); I/O handlers run on the pool's executor under the same
// mutex. Only completions are posted, to each handler's own executor.

#include "coproc/executors/process_pool.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/child_process.hpp"
#include "coproc/runtime/detail/nosigpipe.hpp"
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
constexpr std::size_t pipeline_depth = 32;

/// The longest the loop thread polls for a result before it sleeps.
constexpr std::int64_t spin_budget_ns = 20'000;

/// How long an idle pool keeps listening before it lets io_context::run() return.
constexpr std::chrono::milliseconds rest_interval{20};

}  // namespace

pool_core::pool_core(const asio::any_io_executor& ex, pool_options options)
    : ex_(ex),
      options_(std::move(options)),
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
    slot_view::reset(region_.data(), geometry_, i);
    auto w = std::make_unique<worker_rec>();
    w->index = i;
    w->view = slot_view(region_.data(), geometry_, i);
    workers_.push_back(std::move(w));
  }
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

void pool_core::open() {
  std::lock_guard lock(mutex_);
  for (auto& w : workers_) {
    spawn(*w);
  }
}

void pool_core::spawn(worker_rec& w) {
  zygote_command c{zygote_spawn, static_cast<std::uint32_t>(w.index)};
  w.st = worker_rec::state::spawning;
  w.spawned_ns = monotonic_ns();
  if (!zygote_cmd_ || write_nosigpipe(zygote_cmd_.get(), &c, sizeof c) != sizeof c) {
    on_zygote_lost("cannot reach the zygote");
  }
}

void pool_core::start(task_op* op) {
  std::lock_guard lock(mutex_);
  op->id = next_id_++;
  op->bind_cancellation(this);
  accept(op);
}

void pool_core::accept(task_op* op) {
  if (!accepts_tasks(state_)) {
    ++stats_.tasks_failed;
    op->fail(state_ == pool_state::broken
                 ? broken_error_
                 : error(coproc::errc::pool_stopped, "process_pool: submit after shutdown"));
    return;
  }
  ops_.emplace(op->id, op);
  // A full queue holds the submit back (its caller stays suspended) instead
  // of growing: waiting_ is admitted in order as the queue drains.
  waiting_.push_back(op);
  // While the parent is busy here it does not need the eventfd: a worker that
  // finishes meanwhile (on this very CPU, it runs as soon as it is woken)
  // leaves its result for the check in wait_doorbell, saving two syscalls.
  header_->parent_sleeping.store(0, std::memory_order_relaxed);
  pump();
  if (listening_) {
    wait_doorbell();
  } else {
    start_listening();
  }
}

// Accepted tasks (queued or in a worker's ring) stay within queue_capacity
// plus one running task per worker.
void pool_core::admit_waiting() {
  std::size_t limit = options_.queue_capacity + workers_.size();
  while (!waiting_.empty() && ops_.size() - waiting_.size() < limit) {
    queue_.push_back(waiting_.front());
    waiting_.pop_front();
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
      std::lock_guard lock(self->mutex_);
      self->on_rest_check();
    }
  });
}

// Idle: no task, and no report still owed by the zygote (a replacement on its
// way, or the exit of a worker that retired after its last task). Resting
// earlier would leave that report unread until the next submit, with stats()
// showing a worker missing meanwhile.
bool pool_core::idle() const {
  if (!ops_.empty() || state_ == pool_state::draining || state_ == pool_state::stopping) {
    return false;
  }
  return std::none_of(workers_.begin(), workers_.end(), [](const auto& w) {
    return w->st == worker_rec::state::spawning ||
           (w->st == worker_rec::state::running &&
            w->view.shared->retiring.load(std::memory_order_acquire) != 0);
  });
}

void pool_core::on_rest_check() {
  if (closed()) {
    return;
  }
  if (!idle()) {
    check_starts();
    arm_rest_check();
    // A doorbell a worker failed to ring (its fd closed by a task, or the
    // flags overwritten in shared memory) delays a result by one check at
    // most, never for ever.
    wait_doorbell();
    return;
  }
  listening_ = false;
  // A task timer left armed (it is not disarmed per task: a busy pool would
  // pay a cancel and a re-arm each time) would keep io_context::run() from
  // returning for up to a whole task_timeout.
  for (auto& w : workers_) {
    disarm_timeout(*w);
  }
  header_->parent_sleeping.store(0, std::memory_order_relaxed);
  if (doorbell_armed_) {
    doorbell_->cancel();
  }
  if (reports_armed_ && reports_) {
    reports_->descriptor().cancel();
  }
}

worker_rec* pool_core::pick(const task_op& op) {
  worker_rec* best = nullptr;
  for (auto& w : workers_) {
    if (w->st == worker_rec::state::dead || w->killing || w->inflight.size() >= pipeline_depth) {
      continue;
    }
    if (w->arena_skip && w->view.shared->consumed.load(std::memory_order_acquire) > w->arena_seq) {
      w->arena_skip = false;
      w->arena_busy = false;
    }
    if (op.in_arena && w->arena_busy) {
      continue;
    }
    if (!best || w->inflight.size() < best->inflight.size()) {
      best = w.get();
    }
  }
  return best;
}

// A queued task that cannot be sent fails alone; the pool goes on.
void pool_core::reject(task_op* op, const std::exception_ptr& e) {
  queue_.pop_front();
  ops_.erase(op->id);
  ++stats_.tasks_failed;
  op->fail(e);
}

void pool_core::pump() {
  admit_waiting();
  while (!queue_.empty()) {
    task_op* op = queue_.front();
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
    op->in_arena = sizeof(task_header) + size > inline_limit(workers_[0]->view.tasks);
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
    queue_.pop_front();
    w->touched = true;
    admit_waiting();
  }
  header_->parent_cpu.store(::sched_getcpu(), std::memory_order_relaxed);
  // One doorbell per worker per batch, not one per task.
  for (auto& w : workers_) {
    if (std::exchange(w->touched, false)) {
      w->view.tasks.notify();
      arm_timeout(*w);
    }
  }
}

bool pool_core::send(worker_rec& w, task_op* op, std::size_t size) {
  std::size_t frame_size = op->in_arena ? sizeof(task_header) : sizeof(task_header) + size;
  std::span<std::byte> frame = w.view.tasks.try_reserve(frame_size);
  if (frame.data() == nullptr) {
    if (w.view.tasks.corrupt()) {
      fail_corrupt_worker(w);  // its tail word is not on our terms
    }
    return false;
  }
  std::span<std::byte> body = op->in_arena ? std::span<std::byte>(w.view.in_arena, size)
                                           : frame.subspan(sizeof(task_header));
  op->encode_body(body);
  auto* h = new (frame.data()) task_header;
  h->id = op->id;
  h->thunk = op->thunk;
  h->state.store(task_queued, std::memory_order_relaxed);
  h->in_arena = op->in_arena ? 1 : 0;
  h->body_size = size;
  op->state = &h->state;
  op->sent_ns = monotonic_ns();
  op->worker = static_cast<int>(w.index);
  op->seq = w.sent++;
  if (op->in_arena) {
    w.arena_busy = true;
    w.arena_seq = op->seq;
  }
  w.view.tasks.commit(frame_size);
  w.inflight.push_back(op);
  return true;
}

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
  int cpu = ::sched_getcpu();
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
  if (recent_latency_ns_ > spin_budget_ns) {
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
  std::int64_t deadline = monotonic_ns() + spin_budget_ns;
  do {
    for (int i = 0; i < 64; ++i) {
      if (any_results()) {
        return true;
      }
      shm_ring::cpu_relax();
    }
  } while (monotonic_ns() < deadline);
  return false;
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
  if (w.pidfd) {
    ::syscall(SYS_pidfd_send_signal, w.pidfd.get(), SIGKILL, nullptr, 0);
  }
}

void pool_core::cancel(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  withdraw(id);
  listen_or_rest();
}

// Cancels task `id`: a queued task is dropped; a task in a worker's ring but
// not taken is withdrawn (the worker skips its frame); a running task's
// worker is killed. A result already published wins over the cancellation.
void pool_core::withdraw(std::uint64_t id) {
  auto it = ops_.find(id);
  if (it == ops_.end()) {
    return;
  }
  task_op* op = it->second;
  auto aborted = std::make_exception_ptr(
      std::system_error(asio::error::operation_aborted, "process_pool: task cancelled"));
  if (op->worker < 0) {
    if (auto q = std::find(queue_.begin(), queue_.end(), op); q != queue_.end()) {
      queue_.erase(q);
    } else {
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), op));
    }
    ops_.erase(it);
    ++stats_.tasks_cancelled;
    op->fail(aborted);
    return;
  }
  worker_rec& w = *workers_[static_cast<std::size_t>(op->worker)];
  std::uint32_t queued = task_queued;
  if (w.view.shared->consumed.load(std::memory_order_acquire) <= op->seq &&
      op->state->compare_exchange_strong(queued, task_cancelled, std::memory_order_acq_rel)) {
    bool held_arena = op->in_arena && w.arena_busy && w.arena_seq == op->seq;
    remove_inflight(w, op);
    if (held_arena) {
      w.arena_busy = w.arena_skip = true;  // free once the worker passed the frame
    }
    ++stats_.tasks_cancelled;
    op->fail(aborted);
    return;
  }
  drain(w);
  if (ops_.find(id) == ops_.end()) {
    return;
  }
  remove_inflight(w, op);
  kill(w, id);
  ++stats_.tasks_cancelled;
  op->fail(aborted);
}

void pool_core::arm_timeout(worker_rec& w) {
  if (options_.task_timeout.count() == 0 || w.timer_armed || w.inflight.empty()) {
    return;
  }
  if (!w.timer) {
    w.timer = std::make_unique<asio::steady_timer>(ex_);
  }
  std::int64_t started = w.view.shared->started_ns.load(std::memory_order_relaxed);
  bool running = w.view.shared->running_id.load(std::memory_order_relaxed) != 0;
  auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.task_timeout);
  auto left = running ? timeout - std::chrono::nanoseconds(monotonic_ns() - started) : timeout;
  // started_ns is the worker's to write: a time in the future must not
  // stretch the wait past one timeout.
  left = std::clamp(left, std::chrono::nanoseconds(0), timeout);
  w.timer->expires_after(left);
  w.timer_armed = true;
  w.timer->async_wait([self = shared_from_this(), &w, gen = w.timer_gen](std::error_code ec) {
    std::lock_guard lock(self->mutex_);
    if (gen != w.timer_gen) {
      return;  // disarmed since: a later arm_timeout owns the timer
    }
    w.timer_armed = false;
    if (!ec && !self->closed()) {
      self->on_timeout(w);
      self->listen_or_rest();
    }
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
  std::uint64_t running = w.view.shared->running_id.load(std::memory_order_acquire);
  std::int64_t started = w.view.shared->started_ns.load(std::memory_order_acquire);
  auto elapsed = std::chrono::nanoseconds(monotonic_ns() - started);
  auto it = std::find_if(w.inflight.begin(), w.inflight.end(),
                         [&](task_op* op) { return op->id == running; });
  if (running != 0 && it != w.inflight.end() && elapsed >= options_.task_timeout && !w.killing) {
    task_op* op = *it;
    remove_inflight(w, op);
    kill(w, running);
    ++stats_.tasks_failed;
    op->fail(error(coproc::errc::task_timeout,
                   "task ran past " + std::to_string(options_.task_timeout.count()) + " ms"));
    return;
  }
  arm_timeout(w);
}

void pool_core::fail_all(const std::exception_ptr& e) {
  std::vector<task_op*> all;
  all.reserve(ops_.size());
  for (auto& [id, op] : ops_) {
    all.push_back(op);
  }
  ops_.clear();
  queue_.clear();
  waiting_.clear();
  for (auto& w : workers_) {
    if (!w->inflight.empty() && w->st != worker_rec::state::dead) {
      kill(*w, 0);
    }
    w->inflight.clear();
  }
  for (task_op* op : all) {
    ++stats_.tasks_failed;
    op->fail(e);
  }
}

void pool_core::close(bool drop_completions) noexcept {
  std::lock_guard lock(mutex_);
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
  auto aborted = std::make_exception_ptr(
      std::system_error(asio::error::operation_aborted, "process_pool destroyed"));
  std::vector<task_op*> all;
  for (auto& [id, op] : ops_) {
    all.push_back(op);
  }
  ops_.clear();
  queue_.clear();
  waiting_.clear();
  for (auto& w : workers_) {
    w->inflight.clear();
    if (w->timer) {
      w->timer->cancel();
    }
  }
  for (task_op* op : all) {
    if (drop_completions) {
      op->drop();
    } else {
      op->fail(aborted);
    }
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
  ops_.clear();
  queue_.clear();
  waiting_.clear();
}

void cancel_task(void* core, std::uint64_t id) {
  static_cast<pool_core*>(core)->cancel(id);
}

}  // namespace coproc::detail

namespace coproc {

process_pool::process_pool(const executor_type& ex, pool_options options)
    : ex_(ex),
      workers_(options.workers),
      core_(std::make_shared<detail::pool_core>(ex, std::move(options))) {
  asio::use_service<detail::pool_registry>(asio::query(ex_, asio::execution::context)).add(core_);
  core_->open();
}

process_pool::~process_pool() {
  core_->close();
}

void process_pool::start(detail::task_op* op) {
  core_->start(op);
}

void process_pool::start_shutdown(shutdown_mode mode, std::function<void()> done) {
  core_->shutdown(mode, std::move(done));
}

pool_stats process_pool::stats() const {
  return core_->stats();
}

}  // namespace coproc
