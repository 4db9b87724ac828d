// mpi_pool's rank 0, the progress thread: admission from the queue, sends
// to the rank with the most free slots (a rank's slots: mpi_options::
// tasks_per_rank, by default twice its workers), results, acks and the ranks'
// figures received, failures of a rank, failing everything. Timeouts,
// cancellation of running tasks and crashes are the ranks' own pools' work.

#include <algorithm>
#include <cstring>

#include "coproc/runtime/worker_crashed_error.hpp"
#include "mpi_runtime.hpp"

namespace coproc::detail {
namespace {

/// The worker_crashed_error of a task whose worker died on rank `source`.
std::exception_ptr crash_error(int source, std::span<const std::byte> body) {
  crash_wire c{};
  if (body.size() < sizeof c) {
    return error_ptr(coproc::errc::frame_corrupt, "mpi_pool: short crash report");
  }
  std::memcpy(&c, body.data(), sizeof c);
  exit_status s;
  s.exited = c.exited != 0;
  s.code = c.code;
  s.signal = c.signal;
  s.core_dumped = c.core_dumped != 0;
  s.max_rss_kb = static_cast<long>(c.max_rss_kb);
  std::string text(reinterpret_cast<const char*>(body.data()) + sizeof c, body.size() - sizeof c);
  return std::make_exception_ptr(
      worker_crashed_error(s, "mpi_pool: rank " + std::to_string(source) + ": " + text, source));
}

}  // namespace

bool runtime::has_work_locked() const {
  return stopping_ || !control_.empty() ||
         (session_ != pool_state::closed && ledger_.front() != nullptr && free_rank_locked() > 0);
}

int runtime::free_rank_locked() const {
  int best = -1;
  std::size_t most = 0;
  for (int r = 1; r < size; ++r) {
    std::size_t free = slots_[r] > load_[r] ? slots_[r] - load_[r] : 0;
    if (free > most) {
      best = r;
      most = free;
    }
  }
  return best;
}

void runtime::collect_locked(std::vector<outgoing>& out) {
  for (auto& c : control_) {
    out.push_back(std::move(c));
  }
  control_.clear();
  while (session_ != pool_state::closed && ledger_.front() != nullptr) {
    int r = free_rank_locked();
    if (r < 0) {
      break;
    }
    task_op* op = ledger_.front();
    ledger_.dispatched();
    std::size_t body = op->body_size();
    if (body > max_payload_) {
      ledger_.fail(op, error_ptr(coproc::errc::payload_too_large,
                                 "mpi_pool: task above pool_options::max_payload (or 2 GiB)"));
      continue;
    }
    std::vector<std::byte> m(sizeof(task_wire) + body);
    task_wire t{op->id, op->thunk, 0, 0, 0};
    if (op->retry) {
      t.retries = op->retry->retries;
      t.has_retry = 1;
      t.retry_on_timeout = op->retry->on_timeout ? 1 : 0;
    }
    std::memcpy(m.data(), &t, sizeof t);
    op->encode_body(std::span<std::byte>(m).subspan(sizeof t));
    op->worker = r;
    ++load_[r];
    ++expected_;
    out.push_back({r, tag_task, std::move(m), op->id});
  }
}

void runtime::progress_loop() {
  std::vector<outgoing> out;
  deliveries settled;
  std::vector<in_flight_send> sends;
  std::vector<std::byte> in;
  backoff idle;
  for (;;) {
    {
      std::unique_lock lk(m_);
      if (expected_ == 0 && acks_pending_ == 0 && sends.empty()) {
        if (session_ == pool_state::closed) {
          cv_.wait(lk, [&] { return has_work_locked(); });
        } else {
          // The ranks also send their pools' figures unasked (workers
          // respawned, recycled): look for them 20 times a second.
          cv_.wait_for(lk, std::chrono::milliseconds(50), [&] { return has_work_locked(); });
        }
      } else if (auto d = idle.next_sleep(); d.count() > 0) {
        cv_.wait_for(lk, d, [&] { return has_work_locked(); });
      }
      // Results still on their way are received (and dropped) before the
      // ranks are stopped: a rank blocked sending one would never finalise.
      if (stopping_ && sends.empty() && expected_ == 0) {
        break;
      }
      collect_locked(out);
      finish_if_idle_locked();
      settled = ledger_.take_deliveries();
    }
    bool busy = !out.empty();
    settled.run(false);
    for (outgoing& o : out) {
      in_flight_send s{MPI_REQUEST_NULL, std::move(o.bytes)};
      if (MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, o.rank, o.tag,
                    MPI_COMM_WORLD, &s.req) != MPI_SUCCESS) {
        rank_failed(o.rank, o.task);
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
      } else if (st.MPI_TAG == tag_stats) {
        on_stats(st.MPI_SOURCE, in);
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

void runtime::on_result(int source, std::span<const std::byte> m) {
  if (m.size() < sizeof(result_wire)) {
    return;
  }
  result_wire r;
  std::memcpy(&r, m.data(), sizeof r);
  locked([&] {
    --load_[source];
    --expected_;
    // Not found: cancelled meanwhile; its result is dropped.
    if (task_op* op = ledger_.find(r.id)) {
      auto body = m.subspan(sizeof r);
      if (r.status == status_crash) {
        ledger_.fail(op, crash_error(source, body));
      } else {
        ledger_.complete(op, r.status == status_value, body);
      }
    }
    finish_if_idle_locked();
  });
}

void runtime::on_ack(int source, std::span<const std::byte> m) {
  ack_wire a{0, 0, 0};
  std::string theirs;
  if (m.size() >= sizeof a) {
    std::memcpy(&a, m.data(), sizeof a);
    theirs.assign(reinterpret_cast<const char*>(m.data()) + sizeof a, m.size() - sizeof a);
  }
  std::lock_guard lk(m_);
  ranks_[source].pid = a.pid;
  ranks_[source].workers_alive = a.workers;
  pool_sizes_[source] = a.workers;
  slots_[source] = per_rank_ != 0 ? per_rank_ : 2 * a.workers;
  if (a.ok == ack_refused && hello_error_.empty()) {
    hello_code_ = coproc::errc::function_mismatch;
    hello_error_ = "mpi_pool: rank " + std::to_string(source) + " runs build " + theirs +
                   ", rank 0 announced " + announced_build_id();
  } else if (a.ok == ack_init_failed && hello_error_.empty()) {
    hello_code_ = coproc::errc::worker_crashed;
    hello_error_ =
        "mpi_pool: rank " + std::to_string(source) + " could not start its workers: " + theirs;
  }
  if (--acks_pending_ == 0) {
    opened_.notify_all();
  }
}

void runtime::on_stats(int source, std::span<const std::byte> m) {
  stats_wire w{};
  if (m.size() < sizeof w || (m.size() - sizeof w) % sizeof(std::int32_t) != 0) {
    return;
  }
  std::memcpy(&w, m.data(), sizeof w);
  std::vector<pid_t> pids((m.size() - sizeof w) / sizeof(std::int32_t));
  for (std::size_t i = 0; i < pids.size(); ++i) {
    std::int32_t pid = 0;
    std::memcpy(&pid, m.data() + sizeof w + i * sizeof pid, sizeof pid);
    pids[i] = pid;
  }
  std::lock_guard lk(m_);
  rank_stats& r = ranks_[source];
  r.workers_alive = w.workers_alive;
  r.worker_crashes = w.worker_crashes;
  r.respawns = w.respawns;
  r.tasks_retried = w.tasks_retried;
  r.worker_pids = std::move(pids);
}

// `task`: the id of the task the failed send carried (0 for a control message).
void runtime::rank_failed(int rank, std::uint64_t task) {
  locked([&] {
    if (task == 0) {
      return;
    }
    // Counted when it was collected for this rank; no reply will come.
    --load_[rank];
    --expected_;
    if (task_op* op = ledger_.find(task)) {
      ++ledger_.stats().worker_crashes;
      ledger_.fail(op, error_ptr(coproc::errc::worker_crashed, "mpi_pool: send to a rank failed"));
    }
    finish_if_idle_locked();
  });
}

void runtime::fail_everything() {
  locked([&] {
    fatal_ = true;
    ledger_.fail_all(error_ptr(coproc::errc::worker_crashed, "mpi_pool: MPI failed"));
    finish_if_idle_locked();
    opened_.notify_all();
  });
}

}  // namespace coproc::detail
