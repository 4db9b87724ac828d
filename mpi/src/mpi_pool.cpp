// mpi_pool's machinery. One thread per process makes every MPI call (MPI is
// initialised on it, so MPI_THREAD_FUNNELED is enough): on rank 0 it is the
// progress thread that sends tasks and receives results while the event loop
// runs elsewhere; on the other ranks it runs the worker loop.

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "coproc/ipc/remote_error.hpp"
#include "coproc/mpi/detail/mpi_testing.hpp"
#include "coproc/mpi/mpi_pool.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {
namespace {

enum tag : int { tag_hello = 101, tag_ack, tag_task, tag_result, tag_bye, tag_stop };
constexpr std::uint32_t status_value = 0;
constexpr std::uint32_t status_exception = 1;
constexpr std::uint32_t ack_refused = 0;  // another build
constexpr std::uint32_t ack_ok = 1;
constexpr std::uint32_t ack_init_failed = 2;  // the initializer threw; text = its message

struct task_wire {
  std::uint64_t id;
  std::int64_t thunk;
};
struct result_wire {
  std::uint64_t id;
  std::uint32_t status;
  std::uint32_t pad;
};
struct hello_wire {
  std::int64_t anchor_in_image;  // image_anchor's offset from the first code segment
  std::int64_t initializer;      // pool_options::initializer's code offset (if has_initializer)
  std::uint64_t max_result;      // pool_options::max_payload
  std::uint32_t has_initializer;
  std::uint32_t pad;
};
// The largest body one MPI message carries (its count is an int).
constexpr std::size_t message_limit = static_cast<std::size_t>(INT_MAX) - 64;
struct ack_wire {
  std::uint32_t ok;
  std::int32_t pid;
};

// Equal builds put the anchor at the same place; a cheap second check.
std::int64_t anchor_in_image() {
  return mpi_anchor_offset();
}

std::string build_id_override;

const std::string& announced_build_id() {
  return build_id_override.empty() ? mpi_build_id() : build_id_override;
}

/// Spins a little while work is expected soon, then sleeps longer and longer
/// (up to 1 ms): an idle rank must not take a CPU from the ranks that work.
class backoff {
 public:
  void reset() noexcept { rounds_ = 0; }
  bool spinning() const noexcept { return rounds_ < spin_rounds; }
  std::chrono::microseconds next_sleep() noexcept {
    ++rounds_;
    if (spinning()) {
      return std::chrono::microseconds(0);
    }
    auto k = std::min<std::uint32_t>(rounds_ - spin_rounds, 7);
    return std::chrono::microseconds(8u << k);  // 8 us .. 1 ms
  }

 private:
  static constexpr std::uint32_t spin_rounds = 2000;
  std::uint32_t rounds_ = 0;
};

void sleep_for(std::chrono::microseconds d) {
  if (d.count() == 0) {
    return;
  }
  timespec ts{0, static_cast<long>(d.count()) * 1000};
  ::nanosleep(&ts, nullptr);
}

std::vector<std::byte> message(const void* head, std::size_t head_size, std::string_view tail) {
  std::vector<std::byte> m(head_size + tail.size());
  std::memcpy(m.data(), head, head_size);
  std::memcpy(m.data() + head_size, tail.data(), tail.size());
  return m;
}

// ---------------------------------------------------------------------------
// Worker ranks.

class rank_result final : public result_writer {
 public:
  std::span<std::byte> reserve(std::size_t n) override {
    if (n > limit) {
      throw std::system_error(coproc::errc::payload_too_large,
                              "mpi_pool: result of " + std::to_string(n) + " bytes");
    }
    buf.resize(sizeof(result_wire) + n);
    return {buf.data() + sizeof(result_wire), n};
  }
  void commit(std::size_t n) override { buf.resize(sizeof(result_wire) + n); }

  std::vector<std::byte> buf;
  std::size_t limit = message_limit;
};

int worker_loop() {
  std::vector<std::byte> in;
  rank_result out;
  bool attached = false;
  std::string refusal = "mpi_pool: this rank runs another build";
  backoff idle;
  for (;;) {
    MPI_Status st;
    int flag = 0;
    if (MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) {
      return 2;
    }
    if (flag == 0) {
      sleep_for(idle.next_sleep());
      continue;
    }
    idle.reset();
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    in.resize(static_cast<std::size_t>(n));
    if (MPI_Recv(in.data(), n, MPI_BYTE, 0, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE) !=
        MPI_SUCCESS) {
      return 2;
    }
    switch (st.MPI_TAG) {
      case tag_stop:
        return 0;
      case tag_bye:
        attached = false;
        break;
      case tag_hello: {
        hello_wire h{};
        std::string theirs;
        if (in.size() >= sizeof h) {
          std::memcpy(&h, in.data(), sizeof h);
          theirs.assign(reinterpret_cast<const char*>(in.data()) + sizeof h, in.size() - sizeof h);
        }
        attached = theirs == mpi_build_id() && h.anchor_in_image == anchor_in_image() &&
                   mpi_code_in_image(reinterpret_cast<const void*>(&image_anchor));
        refusal = "mpi_pool: this rank runs another build";
        out.limit = std::min<std::uint64_t>(h.max_result, message_limit);
        ack_wire a{attached ? ack_ok : ack_refused, static_cast<std::int32_t>(::getpid())};
        std::string text = mpi_build_id();
        if (attached && h.has_initializer != 0) {
          // pool_options::initializer, once per rank and pool, on this (the MPI) thread.
          try {
            const void* code = code_address(h.initializer);
            if (!mpi_code_in_image(code)) {
              throw std::system_error(coproc::errc::function_mismatch,
                                      "initializer outside the executable");
            }
            reinterpret_cast<void (*)()>(const_cast<void*>(code))();
          } catch (const std::exception& e) {
            text = e.what();
            a.ok = ack_init_failed;
          } catch (...) {
            text = "an exception not derived from std::exception";
            a.ok = ack_init_failed;
          }
          if (a.ok == ack_init_failed) {
            attached = false;
            refusal = "mpi_pool: the initializer failed on this rank";
          }
        }
        auto m = message(&a, sizeof a, text);
        if (MPI_Send(m.data(), static_cast<int>(m.size()), MPI_BYTE, 0, tag_ack, MPI_COMM_WORLD) !=
            MPI_SUCCESS) {
          return 2;
        }
        break;
      }
      case tag_task: {
        result_wire r{0, status_value, 0};
        try {
          if (in.size() < sizeof(task_wire)) {
            throw std::system_error(coproc::errc::frame_corrupt, "mpi_pool: short task message");
          }
          task_wire t;
          std::memcpy(&t, in.data(), sizeof t);
          r.id = t.id;
          if (!attached) {
            throw std::system_error(coproc::errc::function_mismatch, refusal);
          }
          const void* code = code_address(t.thunk);
          if (!mpi_code_in_image(code)) {
            throw std::system_error(coproc::errc::function_mismatch,
                                    "mpi_pool: task code outside the executable");
          }
          auto thunk = reinterpret_cast<thunk_fn>(const_cast<void*>(code));
          thunk(std::span<const std::byte>(in).subspan(sizeof t), out);
        } catch (...) {
          r.status = status_exception;
          try {
            out.write_value(coproc::capture_current_exception());
          } catch (...) {
            out.buf.resize(sizeof r);  // an empty body: the receiver reports frame_corrupt
          }
        }
        std::memcpy(out.buf.data(), &r, sizeof r);
        if (MPI_Send(out.buf.data(), static_cast<int>(out.buf.size()), MPI_BYTE, 0, tag_result,
                     MPI_COMM_WORLD) != MPI_SUCCESS) {
          return 2;
        }
        if (out.buf.capacity() > (std::size_t{64} << 20)) {
          out.buf = {};  // do not keep a huge result buffer for ever
        }
        break;
      }
      default:
        break;
    }
  }
}

// ---------------------------------------------------------------------------
// Rank 0.

std::exception_ptr error_ptr(coproc::errc e, const char* what) {
  return std::make_exception_ptr(std::system_error(e, what));
}

class runtime {
 public:
  // Set once by the MPI thread before init() returns.
  int rank = -1;
  int size = 0;

  void init(int* argc, char*** argv) {
    std::call_once(once_, [&] {
      std::promise<int> ready;
      auto got = ready.get_future();
      thread_ = std::thread([this, argc, argv, ready = std::move(ready)]() mutable {
        thread_main(argc, argv, ready);
      });
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

  static runtime& instance() {
    static auto* r = new runtime;  // leaked: the atexit handler needs it last
    return *r;
  }

  // --- pool operations (any thread) -------------------------------------

  std::size_t open(const pool_options& options, const mpi_options& mpi) {
    hello_wire h{anchor_in_image(), 0, options.max_payload, 0, 0};
    if (options.initializer) {
      auto* fn = options.initializer.target<void (*)()>();
      if (fn == nullptr || *fn == nullptr ||
          !mpi_code_in_image(reinterpret_cast<const void*>(*fn))) {
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
    if (open_) {
      throw std::system_error(coproc::errc::pool_stopped, "mpi_pool: another pool is open");
    }
    if (fatal_) {
      throw std::system_error(coproc::errc::worker_crashed, "mpi_pool: MPI failed earlier");
    }
    per_rank_ = std::max<std::size_t>(1, mpi.tasks_per_rank);
    capacity_ = std::max<std::size_t>(1, options.queue_capacity);
    max_payload_ = std::min(options.max_payload, message_limit);
    timeout_ns_ =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.task_timeout).count();
    hello_error_.clear();
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
    open_ = true;
    accepting_ = true;
    stats_ = {};
    return static_cast<std::size_t>(size - 1);
  }

  void close() {
    std::vector<task_op*> all;
    std::function<void()> done;
    {
      std::lock_guard lk(m_);
      take_all_locked(all);
      open_ = false;
      accepting_ = false;
      done = std::move(shutdown_done_);
      for (int r = 1; r < size; ++r) {
        control_.push_back({r, tag_bye, {}});
      }
      cv_.notify_all();
    }
    auto aborted = std::make_exception_ptr(
        std::system_error(asio::error::operation_aborted, "mpi_pool destroyed"));
    for (task_op* op : all) {
      op->fail(aborted);
    }
    if (done) {
      done();
    }
  }

  void start(task_op* op) {
    {
      std::lock_guard lk(m_);
      if (open_ && accepting_ && !fatal_) {
        // Back-pressure: past queue_capacity the task waits (in order) until
        // the queue has room, instead of growing the queue.
        if (waiting_.empty() && queue_.size() < capacity_) {
          queue_.emplace(op->id, op);
        } else {
          waiting_.emplace(op->id, op);
        }
        cv_.notify_one();
        return;
      }
    }
    op->fail(error_ptr(coproc::errc::pool_stopped, "mpi_pool: not accepting work"));
  }

  void cancel(std::uint64_t id) {
    task_op* op = nullptr;
    std::function<void()> done;
    {
      std::lock_guard lk(m_);
      if (auto it = queue_.find(id); it != queue_.end()) {
        op = it->second;
        queue_.erase(it);
        admit_locked();
      } else if (auto w = waiting_.find(id); w != waiting_.end()) {
        op = w->second;
        waiting_.erase(w);
      } else if (auto s = sent_.find(id); s != sent_.end()) {
        op = s->second;  // its rank still runs it; the result will be dropped
        sent_.erase(s);
      }
      if (op == nullptr) {
        return;
      }
      ++stats_.tasks_cancelled;
      done = idle_done_locked();
    }
    op->fail(std::make_exception_ptr(
        std::system_error(asio::error::operation_aborted, "mpi_pool: task cancelled")));
    if (done) {
      done();
    }
  }

  void shutdown(shutdown_mode mode, std::function<void()> done) {
    std::vector<task_op*> all;
    {
      std::lock_guard lk(m_);
      accepting_ = false;
      if (mode == shutdown_mode::cancel) {
        take_all_locked(all);
        stats_.tasks_failed += all.size();
      }
      shutdown_done_ = std::move(done);
      done = idle_done_locked();
    }
    auto stopped = error_ptr(coproc::errc::pool_stopped, "mpi_pool: shut down");
    for (task_op* op : all) {
      op->fail(stopped);
    }
    if (done) {
      done();
    }
  }

  pool_stats stats() const {
    std::lock_guard lk(m_);
    pool_stats s = stats_;
    s.workers_alive = size > 0 ? static_cast<std::size_t>(size - 1) : 0;
    s.tasks_queued = queue_.size();
    s.tasks_waiting = waiting_.size();
    for (int r = 1; r < size; ++r) {
      if (load_[r] > 0) {
        ++s.workers_busy;
      }
      s.worker_pids.push_back(pids_[r]);
    }
    return s;
  }

 private:
  struct outgoing {
    int rank;
    int tag;
    std::vector<std::byte> bytes;
    task_op* op = nullptr;  // for tasks: failed if the send fails
  };
  struct in_flight_send {
    MPI_Request req;
    std::vector<std::byte> bytes;
  };

  void thread_main(int* argc, char*** argv, std::promise<int>& ready) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      ready.set_value(-1);
      return;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    load_.assign(static_cast<std::size_t>(size), 0);
    order_.assign(static_cast<std::size_t>(size), {});
    head_since_.assign(static_cast<std::size_t>(size), 0);
    pids_.assign(static_cast<std::size_t>(size), 0);
    if (rank != 0) {
      ready.set_value(rank);  // the main thread waits for this thread to end
      worker_status_ = worker_loop();
      MPI_Finalize();
      return;
    }
    ready.set_value(0);
    progress_loop();
    MPI_Finalize();
  }

  /// Rank 0 at exit: tells the worker ranks to stop, then finalises.
  void finish() {
    {
      std::lock_guard lk(m_);
      stopping_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }

  void take_all_locked(std::vector<task_op*>& all) {
    for (auto& [id, op] : queue_) {
      all.push_back(op);
    }
    for (auto& [id, op] : sent_) {
      all.push_back(op);
    }
    for (auto& [id, op] : waiting_) {
      all.push_back(op);
    }
    queue_.clear();
    sent_.clear();
    waiting_.clear();
  }

  std::function<void()> idle_done_locked() {
    if (shutdown_done_ && !accepting_ && queue_.empty() && sent_.empty() && waiting_.empty()) {
      return std::exchange(shutdown_done_, nullptr);
    }
    return nullptr;
  }

  bool has_work_locked() const {
    return stopping_ || !control_.empty() || (open_ && !queue_.empty() && free_rank_locked() > 0);
  }

  int free_rank_locked() const {
    int best = -1;
    for (int r = 1; r < size; ++r) {
      if (load_[r] < per_rank_ && (best < 0 || load_[r] < load_[best])) {
        best = r;
      }
    }
    return best;
  }

  /// Moves waiting tasks into the queue while it has room.
  void admit_locked() {
    while (!waiting_.empty() && queue_.size() < capacity_) {
      queue_.insert(waiting_.extract(waiting_.begin()));
    }
  }

  static std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  /// Under the lock: the tasks whose rank has run them for task_timeout. A
  /// rank runs its tasks in the order received, so the oldest outstanding
  /// task of a rank is the running one, since the previous result arrived.
  void expire_locked(std::vector<task_op*>& expired) {
    if (timeout_ns_ <= 0) {
      return;
    }
    std::int64_t now = now_ns();
    for (int r = 1; r < size; ++r) {
      if (order_[r].empty() || now - head_since_[r] < timeout_ns_) {
        continue;
      }
      if (auto it = sent_.find(order_[r].front()); it != sent_.end()) {
        expired.push_back(it->second);
        sent_.erase(it);
        ++stats_.tasks_failed;
      }
    }
  }

  /// Under the lock: control messages, then tasks for ranks with room.
  void collect_locked(std::vector<outgoing>& out, std::vector<task_op*>& too_large) {
    for (auto& c : control_) {
      out.push_back(std::move(c));
    }
    control_.clear();
    while (open_ && !queue_.empty()) {
      int r = free_rank_locked();
      if (r < 0) {
        break;
      }
      auto it = queue_.begin();
      task_op* op = it->second;
      queue_.erase(it);
      admit_locked();
      std::size_t body = op->body_size();
      if (body > max_payload_) {
        ++stats_.tasks_failed;
        too_large.push_back(op);
        continue;
      }
      std::vector<std::byte> m(sizeof(task_wire) + body);
      task_wire t{op->id, op->thunk};
      std::memcpy(m.data(), &t, sizeof t);
      op->encode_body(std::span<std::byte>(m).subspan(sizeof t));
      sent_.emplace(op->id, op);
      order_[r].push_back(op->id);
      if (order_[r].size() == 1) {
        head_since_[r] = now_ns();
      }
      ++load_[r];
      ++expected_;
      out.push_back({r, tag_task, std::move(m), op});
    }
  }

  void progress_loop() {
    std::vector<outgoing> out;
    std::vector<task_op*> too_large;
    std::vector<task_op*> expired;
    std::function<void()> expired_done;
    std::vector<in_flight_send> sends;
    std::vector<std::byte> in;
    backoff idle;
    for (;;) {
      {
        std::unique_lock lk(m_);
        if (expected_ == 0 && acks_pending_ == 0 && sends.empty()) {
          cv_.wait(lk, [&] { return has_work_locked(); });
        } else if (auto d = idle.next_sleep(); d.count() > 0) {
          cv_.wait_for(lk, d, [&] { return has_work_locked(); });
        }
        // Results still on their way are received (and dropped) before the
        // ranks are stopped: a rank blocked sending one would never finalise.
        if (stopping_ && sends.empty() && expected_ == 0) {
          break;
        }
        collect_locked(out, too_large);
        expire_locked(expired);
        if (!expired.empty() || !too_large.empty()) {
          expired_done = idle_done_locked();
        }
      }
      bool busy = !out.empty();
      for (task_op* op : too_large) {
        op->fail(error_ptr(coproc::errc::payload_too_large,
                           "mpi_pool: task above pool_options::max_payload (or 2 GiB)"));
      }
      too_large.clear();
      for (task_op* op : expired) {
        op->fail(error_ptr(coproc::errc::task_timeout, "mpi_pool: task ran past task_timeout"));
      }
      expired.clear();
      if (expired_done) {
        std::exchange(expired_done, nullptr)();
      }
      for (outgoing& o : out) {
        in_flight_send s{MPI_REQUEST_NULL, std::move(o.bytes)};
        if (MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, o.rank, o.tag,
                      MPI_COMM_WORLD, &s.req) != MPI_SUCCESS) {
          rank_failed(o.rank, o.op);
          continue;
        }
        sends.push_back(std::move(s));
      }
      out.clear();
      for (std::size_t i = 0; i < sends.size();) {
        int done = 0;
        if (MPI_Test(&sends[i].req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
          done = 1;
        }
        if (done != 0) {
          sends[i] = std::move(sends.back());
          sends.pop_back();
        } else {
          ++i;
        }
      }
      for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) {
          fail_everything();
          return;
        }
        if (flag == 0) {
          break;
        }
        busy = true;
        int n = 0;
        MPI_Get_count(&st, MPI_BYTE, &n);
        in.resize(static_cast<std::size_t>(n));
        if (MPI_Recv(in.data(), n, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS) {
          fail_everything();
          return;
        }
        if (st.MPI_TAG == tag_result) {
          on_result(st.MPI_SOURCE, in);
        } else if (st.MPI_TAG == tag_ack) {
          on_ack(st.MPI_SOURCE, in);
        }
      }
      if (busy) {
        idle.reset();
      }
    }
    for (int r = 1; r < size; ++r) {
      MPI_Send(nullptr, 0, MPI_BYTE, r, tag_stop, MPI_COMM_WORLD);
    }
  }

  void on_result(int source, std::span<const std::byte> m) {
    if (m.size() < sizeof(result_wire)) {
      return;
    }
    result_wire r;
    std::memcpy(&r, m.data(), sizeof r);
    task_op* op = nullptr;
    std::function<void()> done;
    {
      std::lock_guard lk(m_);
      --load_[source];
      --expected_;
      auto& order = order_[source];
      if (auto o = std::find(order.begin(), order.end(), r.id); o != order.end()) {
        order.erase(o);  // the front: a rank answers in order
      }
      head_since_[source] = now_ns();
      if (auto it = sent_.find(r.id); it != sent_.end()) {
        op = it->second;
        sent_.erase(it);
        ++(r.status == status_value ? stats_.tasks_completed : stats_.tasks_failed);
      }
      done = idle_done_locked();
    }
    if (op != nullptr) {
      auto body = m.subspan(sizeof r);
      if (r.status == status_value) {
        op->complete(body);
      } else {
        try {
          op->fail(to_exception_ptr(decode_from<remote_error>(body)));
        } catch (...) {
          op->fail(std::current_exception());
        }
      }
    }
    if (done) {
      done();
    }
  }

  void on_ack(int source, std::span<const std::byte> m) {
    ack_wire a{0, 0};
    std::string theirs;
    if (m.size() >= sizeof a) {
      std::memcpy(&a, m.data(), sizeof a);
      theirs.assign(reinterpret_cast<const char*>(m.data()) + sizeof a, m.size() - sizeof a);
    }
    std::lock_guard lk(m_);
    pids_[source] = a.pid;
    if (a.ok == ack_refused && hello_error_.empty()) {
      hello_code_ = coproc::errc::function_mismatch;
      hello_error_ = "mpi_pool: rank " + std::to_string(source) + " runs build " + theirs +
                     ", rank 0 announced " + announced_build_id();
    } else if (a.ok == ack_init_failed && hello_error_.empty()) {
      hello_code_ = coproc::errc::worker_crashed;
      hello_error_ =
          "mpi_pool: the initializer failed on rank " + std::to_string(source) + ": " + theirs;
    }
    if (--acks_pending_ == 0) {
      opened_.notify_all();
    }
  }

  void rank_failed(int rank, task_op* op) {
    std::lock_guard lk(m_);
    if (op != nullptr) {
      auto& order = order_[rank];
      if (auto o = std::find(order.begin(), order.end(), op->id); o != order.end()) {
        order.erase(o);
      }
    }
    if (op != nullptr && sent_.erase(op->id) != 0) {
      --load_[rank];
      --expected_;
      ++stats_.worker_crashes;
      op->fail(error_ptr(coproc::errc::worker_crashed, "mpi_pool: send to a rank failed"));
    }
  }

  void fail_everything() {
    std::vector<task_op*> all;
    {
      std::lock_guard lk(m_);
      fatal_ = true;
      take_all_locked(all);
      opened_.notify_all();
    }
    for (task_op* op : all) {
      op->fail(error_ptr(coproc::errc::worker_crashed, "mpi_pool: MPI failed"));
    }
  }

  std::once_flag once_;
  std::thread thread_;
  int worker_status_ = 0;

  mutable std::mutex m_;
  std::condition_variable cv_;      // wakes the progress thread
  std::condition_variable opened_;  // wakes a constructor waiting for acks
  bool open_ = false;
  bool accepting_ = false;
  bool stopping_ = false;
  bool fatal_ = false;
  std::size_t per_rank_ = 2;
  int acks_pending_ = 0;
  std::string hello_error_;
  coproc::errc hello_code_ = coproc::errc::function_mismatch;
  std::size_t capacity_ = 4096;  // pool_options::queue_capacity
  std::size_t max_payload_ = message_limit;
  std::int64_t timeout_ns_ = 0;                // pool_options::task_timeout
  std::map<std::uint64_t, task_op*> waiting_;  // submitted while the queue was full
  std::vector<outgoing> control_;
  std::map<std::uint64_t, task_op*> queue_;  // ids grow: map order is FIFO
  std::map<std::uint64_t, task_op*> sent_;
  std::vector<std::size_t> load_;  // tasks a rank holds (cancelled ones too)
  std::vector<int> pids_;
  std::vector<std::deque<std::uint64_t>> order_;  // ids a rank holds, oldest (running) first
  std::vector<std::int64_t> head_since_;          // when order_[r].front() started running
  std::size_t expected_ = 0;                      // results still to come
  std::function<void()> shutdown_done_;
  pool_stats stats_;
};

std::atomic<std::uint64_t> next_id{1};

}  // namespace

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

mpi_pool::mpi_pool(const executor_type& ex, pool_options options, mpi_options mpi) : ex_(ex) {
  auto& rt = detail::runtime::instance();
  rt.init(nullptr, nullptr);
  workers_ = rt.open(options, mpi);
}

mpi_pool::~mpi_pool() {
  detail::runtime::instance().close();
}

void mpi_pool::start(detail::task_op* op) {
  detail::runtime::instance().start(op);
}

void mpi_pool::start_shutdown(shutdown_mode mode, std::function<void()> done) {
  detail::runtime::instance().shutdown(mode, std::move(done));
}

pool_stats mpi_pool::stats() const {
  return detail::runtime::instance().stats();
}

}  // namespace coproc
