// mpi_pool's rank 0, the progress thread: admission from the queue, sends
// to the least loaded rank (at most tasks_per_rank each), task timeouts,
// results and acks received, failures of a rank, failing everything.

#include <algorithm>
#include <cstring>

#include "mpi_runtime.hpp"

namespace coproc::detail {

bool runtime::has_work_locked() const {
  return stopping_ || !control_.empty() ||
         (session_ != pool_state::closed && ledger_.front() != nullptr && free_rank_locked() > 0);
}

int runtime::free_rank_locked() const {
  int best = -1;
  for (int r = 1; r < size; ++r) {
    if (load_[r] < per_rank_ && (best < 0 || load_[r] < load_[best])) {
      best = r;
    }
  }
  return best;
}

void runtime::expire_locked() {
  if (timeout_ns_ <= 0) {
    return;
  }
  std::int64_t now = now_ns();
  for (int r = 1; r < size; ++r) {
    if (order_[r].empty() || now - head_since_[r] < timeout_ns_) {
      continue;
    }
    if (task_op* op = ledger_.find(order_[r].front())) {
      ledger_.fail(op,
                   error_ptr(coproc::errc::task_timeout, "mpi_pool: task ran past task_timeout"));
    }
  }
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
    task_wire t{op->id, op->thunk};
    std::memcpy(m.data(), &t, sizeof t);
    op->encode_body(std::span<std::byte>(m).subspan(sizeof t));
    order_[r].push_back(op->id);
    if (order_[r].size() == 1) {
      head_since_[r] = now_ns();
    }
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
        cv_.wait(lk, [&] { return has_work_locked(); });
      } else if (auto d = idle.next_sleep(); d.count() > 0) {
        cv_.wait_for(lk, d, [&] { return has_work_locked(); });
      }
      // Results still on their way are received (and dropped) before the
      // ranks are stopped: a rank blocked sending one would never finalise.
      if (stopping_ && sends.empty() && expected_ == 0) {
        break;
      }
      collect_locked(out);
      expire_locked();
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
    auto& order = order_[source];
    if (auto o = std::find(order.begin(), order.end(), r.id); o != order.end()) {
      order.erase(o);  // the front: a rank answers in order
    }
    head_since_[source] = now_ns();
    // Not found: cancelled or timed out meanwhile; its result is dropped.
    if (task_op* op = ledger_.find(r.id)) {
      ledger_.complete(op, r.status == status_value, m.subspan(sizeof r));
    }
    finish_if_idle_locked();
  });
}

void runtime::on_ack(int source, std::span<const std::byte> m) {
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

// `task`: the id of the task the failed send carried (0 for a control message).
void runtime::rank_failed(int rank, std::uint64_t task) {
  locked([&] {
    if (task == 0) {
      return;
    }
    auto& order = order_[rank];
    if (auto o = std::find(order.begin(), order.end(), task); o != order.end()) {
      order.erase(o);
      --load_[rank];
      --expected_;
    }
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
