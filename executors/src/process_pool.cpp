// The parent side of a process_pool: queue, dispatch into worker rings,
// completion drain, worker deaths, cancellation, timeouts and shutdown. A
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

#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>
#include <atomic>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "coproc/executors/detail/zygote.hpp"
#include "coproc/runtime/worker_crashed_error.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/child_process.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "coproc/runtime/pipe_reader.hpp"

namespace coproc::detail {
namespace {

std::size_t round_pow2(std::size_t n) {
  std::size_t p = 4096;
  while (p < n) {
    p <<= 1;
  }
  return p;
}

std::exception_ptr error(coproc::errc e, const std::string& what) {
  return std::make_exception_ptr(std::system_error(e, what));
}

exit_status to_exit_status(const zygote_report& r) {
  exit_status s;
  s.exited = WIFEXITED(r.wait_status);
  s.code = s.exited ? WEXITSTATUS(r.wait_status) : 0;
  s.signal = WIFSIGNALED(r.wait_status) ? WTERMSIG(r.wait_status) : 0;
  s.core_dumped = WIFSIGNALED(r.wait_status) && WCOREDUMP(r.wait_status);
  s.max_rss_kb = r.max_rss_kb;
  return s;
}

/// Tasks in flight per worker: enough to keep a busy worker fed between two
/// parent wake-ups, few enough that a slow task delays little else.
constexpr std::size_t pipeline_depth = 32;

/// The longest the loop thread polls for a result before it sleeps.
constexpr std::int64_t spin_budget_ns = 20'000;

/// How long an idle pool keeps listening before it lets io_context::run() return.
constexpr std::chrono::milliseconds rest_interval{20};

}  // namespace

struct worker_rec {
  enum class state { spawning, running, dead };
  std::size_t index = 0;
  slot_view view;
  state st = state::dead;
  pid_t pid = 0;
  unique_fd pidfd;
  std::deque<task_op*> inflight;  // sent, not finished, in send order
  std::uint64_t sent = 0;
  bool arena_busy = false;
  bool arena_skip = false;  // arena held by a cancelled frame until the worker passes it
  std::uint64_t arena_seq = 0;
  bool killing = false;
  std::uint64_t kill_target = 0;
  std::unique_ptr<asio::steady_timer> timer;
  bool timer_armed = false;
  bool touched = false;  // sent to during the current pump()
};

class pool_core : public std::enable_shared_from_this<pool_core> {
 public:
  pool_core(const asio::any_io_executor& ex, pool_options options);
  ~pool_core() { close(); }

  void open();
  void close() noexcept;
  void start(task_op* op);
  void cancel(std::uint64_t id);
  void shutdown(shutdown_mode mode, std::function<void()> done);
  pool_stats stats() const;

 private:
  void accept(task_op* op);
  void pump();
  void admit_waiting();
  worker_rec* pick(const task_op& op);
  bool send(worker_rec& w, task_op* op, std::size_t size);
  void drain();
  void drain(worker_rec& w);
  void finish(worker_rec& w, task_op* op, const result_header& h, std::span<const std::byte> body);
  void wait_doorbell();
  bool spin_for_results(int cpu);
  void on_doorbell();
  task_op* doorbell_turn();
  void read_reports();
  bool idle() const;
  void listen_or_rest();
  void start_listening();
  void arm_rest_check();
  void on_rest_check();
  void on_report(const zygote_report& r);
  void on_worker_exit(worker_rec& w, const exit_status& status);
  void spawn(worker_rec& w);
  void kill(worker_rec& w, std::uint64_t target);
  void withdraw(std::uint64_t id);
  void arm_timeout(worker_rec& w);
  void on_timeout(worker_rec& w);
  void fail_all(const std::exception_ptr& e);
  void maybe_finish_shutdown();
  void remove_inflight(worker_rec& w, task_op* op);
  void fail_corrupt_worker(worker_rec& w);
  bool any_results() const;

  asio::any_io_executor ex_;
  // Guards every member below: entry points run on callers' threads, handlers
  // on the io_context's threads. Recursive, because a handler's destructor
  // run under the lock may submit again.
  mutable std::recursive_mutex mutex_;
  pool_options options_;
  pool_geometry geometry_;
  mapped_region region_;
  pool_header* header_ = nullptr;
  unique_fd doorbell_fd_;
  unique_fd zygote_cmd_;
  child_process zygote_;
  std::unique_ptr<pipe_reader> reports_;
  std::unique_ptr<asio::posix::stream_descriptor> doorbell_;
  zygote_report report_{};
  worker_config config_;
  std::vector<std::unique_ptr<worker_rec>> workers_;
  std::deque<task_op*> queue_;    // accepted, not yet sent (at most queue_capacity)
  std::deque<task_op*> waiting_;  // submitted while the queue was full
  std::unordered_map<std::uint64_t, task_op*> ops_;
  std::uint64_t next_id_ = 1;
  bool doorbell_armed_ = false;
  bool drain_posted_ = false;
  // While on_doorbell runs, finished tasks are kept here rather than posted,
  // and handed to their handlers once the lock is released (deliver_held).
  bool holding_ = false;
  task_op* held_head_ = nullptr;
  task_op* held_tail_ = nullptr;
  std::int64_t recent_latency_ns_ = 0;
  bool reports_armed_ = false;
  bool listening_ = false;
  asio::steady_timer rest_timer_{ex_};
  bool stopping_ = false;
  bool closed_ = false;
  bool broken_ = false;
  std::function<void()> shutdown_done_;
  pool_stats stats_;
};

pool_core::pool_core(const asio::any_io_executor& ex, pool_options options)
    : ex_(ex), options_(std::move(options)) {
  if (options_.workers == 0) {
    options_.workers = 1;
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
  auto [cmd_read, cmd_write] = make_pipe();
  auto [report_read, report_write] = make_pipe();
  config_ = {region_.data(), geometry_, doorbell_fd_.get(), &options_, region_.fd()};
  // The zygote is forked now, before this pool has any ring or thread.
  pid_t pid = fork_zygote(config_, cmd_read.get(), report_write.get());
  zygote_ = child_process::adopt(pid);
  zygote_cmd_ = std::move(cmd_write);
  check_syscall(::fcntl(zygote_cmd_.get(), F_SETFL, O_NONBLOCK), "fcntl");
  reports_ = std::make_unique<pipe_reader>(ex_, std::move(report_read));
  doorbell_ = std::make_unique<asio::posix::stream_descriptor>(
      ex_, ::fcntl(doorbell_fd_.get(), F_DUPFD_CLOEXEC, 0));
}

void pool_core::open() {
  std::lock_guard lock(mutex_);
  for (auto& w : workers_) {
    spawn(*w);
  }
}

void pool_core::spawn(worker_rec& w) {
  zygote_command c{zygote_spawn, static_cast<std::uint32_t>(w.index)};
  if (::write(zygote_cmd_.get(), &c, sizeof c) != sizeof c) {
    broken_ = true;
    fail_all(error(coproc::errc::worker_crashed, "cannot reach the zygote"));
    return;
  }
  w.st = worker_rec::state::spawning;
}

void pool_core::start(task_op* op) {
  std::lock_guard lock(mutex_);
  op->id = next_id_++;
  op->bind_cancellation(this);
  accept(op);
}

void pool_core::accept(task_op* op) {
  if (stopping_ || closed_ || broken_) {
    ++stats_.tasks_failed;
    op->fail(error(coproc::errc::pool_stopped, "process_pool: submit after shutdown"));
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
  if (closed_ || !listening_) {
    return;
  }
  wait_doorbell();
  read_reports();
}

void pool_core::start_listening() {
  if (listening_ || closed_) {
    return;
  }
  listening_ = true;
  listen_or_rest();
  arm_rest_check();
}

void pool_core::arm_rest_check() {
  rest_timer_.expires_after(rest_interval);
  rest_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
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
  if (!ops_.empty() || stopping_) {
    return false;
  }
  return std::none_of(workers_.begin(), workers_.end(), [](const auto& w) {
    return w->st == worker_rec::state::spawning ||
           (w->st == worker_rec::state::running &&
            w->view.shared->retiring.load(std::memory_order_acquire) != 0);
  });
}

void pool_core::on_rest_check() {
  if (closed_) {
    return;
  }
  if (!idle()) {
    arm_rest_check();
    return;
  }
  listening_ = false;
  header_->parent_sleeping.store(0, std::memory_order_relaxed);
  if (doorbell_armed_) {
    doorbell_->cancel();
  }
  if (reports_armed_) {
    reports_->cancel();
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

void pool_core::pump() {
  admit_waiting();
  while (!queue_.empty()) {
    task_op* op = queue_.front();
    std::size_t size = op->body_size();
    if (size > options_.max_payload) {
      queue_.pop_front();
      ops_.erase(op->id);
      ++stats_.tasks_failed;
      op->fail(error(coproc::errc::payload_too_large,
                     "task arguments of " + std::to_string(size) + " bytes"));
      continue;
    }
    op->in_arena = sizeof(task_header) + size > inline_limit(workers_[0]->view.tasks);
    worker_rec* w = pick(*op);
    if (!w || !send(*w, op, size)) {
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
    if (!w->view.results.empty()) {
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
  if (closed_) {
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
          if (ec || self->closed_) {
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
  if (closed_) {
    return;
  }
  header_->parent_sleeping.store(0, std::memory_order_relaxed);
  drain();
  pump();
  maybe_finish_shutdown();
  listen_or_rest();
}

void pool_core::read_reports() {
  if (reports_armed_ || closed_) {
    return;
  }
  reports_armed_ = true;
  asio::async_read(
      *reports_, asio::buffer(&report_, sizeof report_),
      [self = shared_from_this()](std::error_code ec, std::size_t) {
        std::lock_guard lock(self->mutex_);
        self->reports_armed_ = false;
        if (self->closed_) {
          return;
        }
        if (ec == asio::error::operation_aborted) {
          self->listen_or_rest();
          return;
        }
        if (ec) {
          if (!self->stopping_) {
            self->broken_ = true;
            self->fail_all(error(coproc::errc::worker_crashed, "the pool's zygote process died"));
          }
          return;
        }
        self->on_report(self->report_);
        self->listen_or_rest();
      });
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
      ++stats_.workers_alive;
      if (w.killing) {
        kill(w, w.kill_target);
      }
      break;
    case report_exited:
      --stats_.workers_alive;
      on_worker_exit(w, to_exit_status(r));
      break;
    case report_spawn_failed:
      broken_ = true;
      fail_all(error(coproc::errc::worker_crashed,
                     "fork of a worker failed: " + std::system_category().message(r.error)));
      break;
    default:
      break;
  }
}

void pool_core::on_worker_exit(worker_rec& w, const exit_status& status) {
  drain(w);  // results published before the death still count
  auto& shared = *w.view.shared;
  bool retired = status.success() && shared.retiring.load(std::memory_order_acquire) != 0;
  std::uint64_t running = shared.running_id.load(std::memory_order_acquire);
  std::uint64_t consumed = shared.consumed.load(std::memory_order_acquire);
  std::deque<task_op*> requeue;
  std::string why = "worker " + std::to_string(w.pid) + " " + status.describe() + " (max RSS " +
                    std::to_string(status.max_rss_kb) + " KiB)";
  for (task_op* op : w.inflight) {
    bool crashed_here =
        op->id == running && consumed > op->seq && !(w.killing && w.kill_target != op->id);
    if (crashed_here) {
      ops_.erase(op->id);
      ++stats_.tasks_failed;
      op->fail(std::make_exception_ptr(worker_crashed_error(status, why)));
    } else {
      op->worker = -1;
      op->state = nullptr;
      requeue.push_back(op);
    }
  }
  queue_.insert(queue_.begin(), requeue.begin(), requeue.end());
  if (!retired && !w.killing) {
    ++stats_.worker_crashes;
  }
  if (status.exited &&
      (status.code == worker_exit_init_failed || status.code == worker_exit_bad_image)) {
    broken_ = true;
    fail_all(error(coproc::errc::worker_crashed, status.code == worker_exit_init_failed
                                                     ? "the pool's initializer failed"
                                                     : "worker image mismatch"));
  }
  w.inflight.clear();
  w.pidfd.reset();
  w.pid = 0;
  w.st = worker_rec::state::dead;
  w.sent = 0;
  w.arena_busy = w.arena_skip = false;
  w.killing = false;
  w.kill_target = 0;
  slot_view::reset(region_.data(), geometry_, w.index);
  w.view = slot_view(region_.data(), geometry_, w.index);
  if (!stopping_ && !broken_ && !closed_) {
    ++stats_.respawns;
    spawn(w);
  }
  pump();
  maybe_finish_shutdown();
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
  w.timer->expires_after(left);
  w.timer_armed = true;
  w.timer->async_wait([self = shared_from_this(), &w](std::error_code ec) {
    std::lock_guard lock(self->mutex_);
    w.timer_armed = false;
    if (!ec && !self->closed_) {
      self->on_timeout(w);
      self->listen_or_rest();
    }
  });
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

void pool_core::shutdown(shutdown_mode mode, std::function<void()> done) {
  std::lock_guard lock(mutex_);
  if (closed_ || (stopping_ && shutdown_done_)) {
    done();
    return;
  }
  stopping_ = true;
  shutdown_done_ = std::move(done);
  start_listening();
  if (mode == shutdown_mode::cancel) {
    fail_all(error(coproc::errc::pool_stopped, "process_pool: shut down"));
  }
  maybe_finish_shutdown();
}

void pool_core::maybe_finish_shutdown() {
  if (!stopping_ || !shutdown_done_ || !ops_.empty()) {
    return;
  }
  zygote_command c{zygote_stop, 0};
  [[maybe_unused]] ssize_t n = ::write(zygote_cmd_.get(), &c, sizeof c);
  zygote_cmd_.reset();
  zygote_.async_wait_exit(ex_, [self = shared_from_this()](std::error_code, exit_status) {
    std::lock_guard lock(self->mutex_);
    self->close();
    if (auto done = std::move(self->shutdown_done_)) {
      done();
    }
  });
}

void pool_core::close() noexcept {
  std::lock_guard lock(mutex_);
  if (closed_) {
    return;
  }
  closed_ = true;
  for (auto& w : workers_) {
    if (w->pidfd) {
      ::syscall(SYS_pidfd_send_signal, w->pidfd.get(), SIGKILL, nullptr, 0);
    }
  }
  if (zygote_cmd_) {
    zygote_command c{zygote_stop, 0};
    [[maybe_unused]] ssize_t n = ::write(zygote_cmd_.get(), &c, sizeof c);
    zygote_cmd_.reset();
  }
  // The zygote kills and reaps its workers on the stop command; give it a
  // moment, then make sure (its death takes the workers along by their death signal).
  if (zygote_) {
    pollfd p{zygote_.pidfd(), POLLIN, 0};
    ::poll(&p, 1, 500);
  }
  zygote_.kill_and_reap();
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
    op->fail(aborted);
  }
  if (doorbell_) {
    doorbell_->cancel();
  }
  if (reports_) {
    reports_->cancel();
  }
  rest_timer_.cancel();
}

pool_stats pool_core::stats() const {
  std::lock_guard lock(mutex_);
  pool_stats s = stats_;
  s.tasks_queued = queue_.size();
  s.tasks_waiting = waiting_.size();
  for (const auto& w : workers_) {
    if (!w->inflight.empty()) {
      ++s.workers_busy;
    }
    if (w->st == worker_rec::state::running) {
      s.worker_pids.push_back(w->pid);
    }
  }
  return s;
}

void cancel_task(void* core, std::uint64_t id) {
  static_cast<pool_core*>(core)->cancel(id);
}

}  // namespace coproc::detail

namespace coproc {

process_pool::process_pool(const executor_type& ex, pool_options options)
    : ex_(ex),
      workers_(options.workers == 0 ? 1 : options.workers),
      core_(std::make_shared<detail::pool_core>(ex, std::move(options))) {
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
