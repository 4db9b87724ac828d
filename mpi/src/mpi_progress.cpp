// mpi_pool's rank 0, the progress thread: admission from the queue, sends
// to the least loaded rank (at most tasks_per_rank each), task timeouts,
// results and acks received, failures of a rank, failing everything.

#include <algorithm>
#include <cstring>

#include "coproc/ipc/remote_error.hpp"
#include "mpi_runtime.hpp"

namespace coproc::detail {

void runtime::take_all_locked(std::vector<task_op*>& all) {
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

bool runtime::has_work_locked() const {
  return stopping_ || !control_.empty() ||
         (session_ != pool_state::closed && !queue_.empty() && free_rank_locked() > 0);
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

void runtime::admit_locked() {
  while (!waiting_.empty() && queue_.size() < capacity_) {
    queue_.insert(waiting_.extract(waiting_.begin()));
  }
}

void runtime::expire_locked(std::vector<task_op*>& expired) {
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

void runtime::collect_locked(std::vector<outgoing>& out, std::vector<task_op*>& too_large) {
  for (auto& c : control_) {
    out.push_back(std::move(c));
  }
  control_.clear();
  while (session_ != pool_state::closed && !queue_.empty()) {
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

void runtime::progress_loop() {
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

void runtime::on_result(int source, std::span<const std::byte> m) {
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

void runtime::rank_failed(int rank, task_op* op) {
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

void runtime::fail_everything() {
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

}  // namespace coproc::detail
