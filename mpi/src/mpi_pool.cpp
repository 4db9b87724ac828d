// mpi_pool's rank 0, pool operations: MPI start-up, opening and closing a
// session with the worker ranks, submit, cancel, shutdown, stats, and the
// backend under basic_pool. One thread per process makes every MPI call (MPI
// is initialised on it, so MPI_THREAD_FUNNELED is enough).

#include <cstdlib>
#include <cstring>

#include "coproc/executors/detail/code_identity.hpp"
#include "coproc/mpi/detail/mpi_testing.hpp"
#include "mpi_runtime.hpp"

namespace coproc::detail {
namespace {

std::string build_id_override;

std::atomic<std::uint64_t> next_id{1};

std::int64_t to_ms(std::chrono::milliseconds d) {
  return static_cast<std::int64_t>(d.count());
}

/// What every worker rank builds its own process_pool with.
rank_pool_wire rank_pool_options(const pool_options& o, const mpi_options& mpi) {
  rank_pool_wire w{};
  w.workers = mpi.workers_per_rank;
  w.max_tasks_per_worker = o.max_tasks_per_worker;
  w.max_worker_rss = o.max_worker_rss;
  w.task_timeout_ms = to_ms(o.task_timeout);
  w.stop_grace_ms = to_ms(o.stop_grace);
  w.start_timeout_ms = to_ms(o.start_timeout);
  w.max_restarts = o.max_restarts;
  w.restart_period_ms = to_ms(o.restart_period);
  w.ring_bytes = o.ring_bytes;
  w.address_space = o.limits.address_space;
  w.cpu_seconds = o.limits.cpu_seconds;
  w.open_files = o.limits.open_files;
  w.arena_keep = o.arena_keep;
  w.start_method = static_cast<std::uint32_t>(o.start_method);
  w.idle_priority = o.idle_priority ? 1 : 0;
  w.retries = o.retries;
  w.retry_timeouts = o.retry_timeouts ? 1 : 0;
  return w;
}

}  // namespace

const std::string& announced_build_id() {
  return build_id_override.empty() ? build_id_text() : build_id_override;
}

void runtime::init(int* argc, char*** argv) {
  std::call_once(once_, [&] {
    std::promise<int> ready;
    auto got = ready.get_future();
    thread_ = std::thread(
        [this, argc, argv, ready = std::move(ready)]() mutable { thread_main(argc, argv, ready); });
    int r = got.get();
    if (r < 0) {
      thread_.join();
      throw std::system_error(coproc::errc::pool_stopped, "MPI_Init_thread failed");
    }
    if (r != 0) {
      thread_.join();
      std::exit(worker_status_);
    }
    std::atexit([] { instance().finish(); });
  });
}

std::size_t runtime::open(const pool_options& options, const mpi_options& mpi) {
  hello_wire h{own_image().id.anchor_offset,   0, options.max_payload, 0, 0,
               rank_pool_options(options, mpi)};
  if (options.initializer) {
    auto* fn = options.initializer.target<void (*)()>();
    if (fn == nullptr || *fn == nullptr || !in_main_program(reinterpret_cast<const void*>(*fn))) {
      throw std::system_error(coproc::errc::function_mismatch,
                              "mpi_pool: the initializer must be a function of the main "
                              "executable (+[] {...} for a captureless lambda): a closure "
                              "cannot travel to another rank");
    }
    h.initializer = code_offset(reinterpret_cast<const void*>(*fn));
    h.has_initializer = 1;
  }
  std::unique_lock lk(m_);
  if (size < 2) {
    throw std::system_error(coproc::errc::pool_stopped,
                            "mpi_pool: the job needs at least 2 ranks (rank 0 submits)");
  }
  if (session_ != pool_state::closed) {
    throw std::system_error(coproc::errc::pool_stopped, "mpi_pool: another pool is open");
  }
  if (fatal_) {
    throw std::system_error(coproc::errc::worker_crashed, "mpi_pool: MPI failed earlier");
  }
  per_rank_ = mpi.tasks_per_rank;
  max_payload_ = std::min(options.max_payload, message_limit);
  hello_error_.clear();
  for (int r = 1; r < size; ++r) {
    ranks_[r] = rank_stats{};
    ranks_[r].rank = r;
  }
  acks_pending_ = size - 1;
  for (int r = 1; r < size; ++r) {
    control_.push_back({r, tag_hello, message(&h, sizeof h, announced_build_id())});
  }
  cv_.notify_all();
  opened_.wait(lk, [&] { return acks_pending_ == 0 || fatal_; });
  if (fatal_) {
    throw std::system_error(coproc::errc::worker_crashed, "mpi_pool: MPI failed at start-up");
  }
  if (!hello_error_.empty()) {
    throw std::system_error(hello_code_, hello_error_);
  }
  // Admitted tasks: a queue of queue_capacity, plus what the ranks hold (the
  // acks said how many workers each has).
  std::size_t workers = 0;
  std::size_t held = 0;
  for (int r = 1; r < size; ++r) {
    workers += pool_sizes_[r];
    held += slots_[r];
  }
  ledger_.set_limit(std::max<std::size_t>(1, options.queue_capacity) + held);
  session_ = pool_state::running;
  ledger_.stats() = {};
  return workers;
}

void runtime::close() {
  locked([&] {
    ledger_.fail_all(std::make_exception_ptr(
        std::system_error(asio::error::operation_aborted, "mpi_pool destroyed")));
    session_ = pool_state::closed;
    if (shutdown_done_) {
      ledger_.pending().call(std::exchange(shutdown_done_, nullptr));
    }
    for (int r = 1; r < size; ++r) {
      control_.push_back({r, tag_bye, {}});
    }
    cv_.notify_all();
  });
}

void runtime::start(task_op* op) {
  locked([&] {
    if (!accepts_tasks(session_) || fatal_) {
      ledger_.refuse(op, error_ptr(coproc::errc::pool_stopped, "mpi_pool: not accepting work"));
      return;
    }
    // Back-pressure: past the limit the task waits (in order) until there
    // is room, instead of growing the queue.
    ledger_.accept(op);
    cv_.notify_one();
  });
}

// A queued task is withdrawn; a sent one is failed now and its rank cancels
// it there (its worker is killed if it runs); its reply will be dropped.
void runtime::cancel(std::uint64_t id) {
  locked([&] {
    task_op* op = ledger_.find(id);
    if (op == nullptr) {
      return;
    }
    if (!ledger_.withdraw_queued(op)) {
      cancel_wire c{id};
      control_.push_back({op->worker, tag_cancel, message(&c, sizeof c, {})});
      cv_.notify_one();
    }
    ledger_.fail(op,
                 std::make_exception_ptr(
                     std::system_error(asio::error::operation_aborted, "mpi_pool: task cancelled")),
                 task_ledger::ending::cancelled);
    finish_if_idle_locked();
  });
}

void runtime::shutdown(shutdown_mode mode, std::function<void()> done) {
  locked([&] {
    if (session_ == pool_state::running) {
      session_ = pool_state::draining;
    }
    if (mode == shutdown_mode::cancel) {
      ledger_.fail_all(error_ptr(coproc::errc::pool_stopped, "mpi_pool: shut down"));
    }
    shutdown_done_ = std::move(done);
    finish_if_idle_locked();
  });
}

pool_stats runtime::stats() const {
  std::lock_guard lk(m_);
  pool_stats s = ledger_.stats();
  s.tasks_queued = ledger_.queued();
  s.tasks_waiting = ledger_.waiting();
  for (int r = 1; r < size; ++r) {
    rank_stats one = ranks_[r];
    one.tasks_held = load_[r];
    one.workers_busy = std::min(load_[r], one.workers_alive);
    s.workers_alive += one.workers_alive;
    s.workers_busy += one.workers_busy;
    s.worker_crashes += one.worker_crashes;
    s.respawns += one.respawns;
    s.tasks_retried += one.tasks_retried;
    s.worker_pids.insert(s.worker_pids.end(), one.worker_pids.begin(), one.worker_pids.end());
    s.ranks.push_back(std::move(one));
  }
  return s;
}

void runtime::thread_main(int* argc, char*** argv, std::promise<int>& ready) {
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    ready.set_value(-1);
    return;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  load_.assign(static_cast<std::size_t>(size), 0);
  slots_.assign(static_cast<std::size_t>(size), 0);
  pool_sizes_.assign(static_cast<std::size_t>(size), 0);
  ranks_.assign(static_cast<std::size_t>(size), {});
  if (rank != 0) {
    ready.set_value(rank);  // the main thread waits for this thread to end
    worker_status_ = rank_worker_loop();
    MPI_Finalize();
    return;
  }
  ready.set_value(0);
  progress_loop();
  MPI_Finalize();
}

void runtime::finish() {
  {
    std::lock_guard lk(m_);
    stopping_ = true;
    cv_.notify_all();
  }
  thread_.join();
}

void runtime::finish_if_idle_locked() {
  if (shutdown_done_ && !accepts_tasks(session_) && ledger_.empty()) {
    ledger_.pending().call(std::exchange(shutdown_done_, nullptr));
  }
}

std::uint64_t mpi_next_id() noexcept {
  return next_id.fetch_add(1, std::memory_order_relaxed);
}

void mpi_cancel(std::uint64_t id) {
  runtime::instance().cancel(id);
}

void mpi_set_build_id_for_testing(std::string id) {
  build_id_override = std::move(id);
}

}  // namespace coproc::detail

namespace coproc {

void mpi_pool::run_workers_if_not_root(int& argc, char**& argv) {
  detail::runtime::instance().init(&argc, &argv);
}

int mpi_pool::rank() {
  auto& rt = detail::runtime::instance();
  rt.init(nullptr, nullptr);
  return rt.rank;
}

namespace detail {

mpi_backend::mpi_backend(const asio::any_io_executor&, const pool_options& options,
                         const mpi_options& mpi) {
  auto& rt = runtime::instance();
  rt.init(nullptr, nullptr);
  workers_ = rt.open(options, mpi);
}

mpi_backend::~mpi_backend() {
  runtime::instance().close();
}

void mpi_backend::start(task_op* op) {
  runtime::instance().start(op);
}

void mpi_backend::shutdown(shutdown_mode mode, std::function<void()> done) {
  runtime::instance().shutdown(mode, std::move(done));
}

pool_stats mpi_backend::stats() const {
  return runtime::instance().stats();
}

}  // namespace detail
}  // namespace coproc
