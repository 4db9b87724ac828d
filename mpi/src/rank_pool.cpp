#include "rank_pool.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/detail/usable_cpus.hpp"
#include "coproc/runtime/worker_crashed_error.hpp"

namespace coproc::detail {
namespace {

std::vector<std::byte> with_head(const void* head, std::size_t head_size,
                                 std::span<const std::byte> tail) {
  std::vector<std::byte> m(head_size + tail.size());
  std::memcpy(m.data(), head, head_size);
  if (!tail.empty()) {
    std::memcpy(m.data() + head_size, tail.data(), tail.size());
  }
  return m;
}

pool_options local_options(const rank_pool_wire& w, std::size_t max_result, void (*initializer)()) {
  pool_options o;
  o.workers = w.workers != 0 ? w.workers : usable_cpus();
  o.max_tasks_per_worker = w.max_tasks_per_worker;
  o.max_worker_rss = w.max_worker_rss;
  o.task_timeout = std::chrono::milliseconds(w.task_timeout_ms);
  o.stop_grace = std::chrono::milliseconds(w.stop_grace_ms);
  o.start_timeout = std::chrono::milliseconds(w.start_timeout_ms);
  o.max_restarts = w.max_restarts;
  o.restart_period = std::chrono::milliseconds(w.restart_period_ms);
  o.ring_bytes = w.ring_bytes;
  o.arena_keep = w.arena_keep;
  o.max_payload = max_result;
  o.limits = {w.address_space, w.cpu_seconds, w.open_files};
  o.start_method = static_cast<coproc::start_method>(w.start_method);
  o.idle_priority = w.idle_priority != 0;
  o.retries = w.retries;
  o.retry_timeouts = w.retry_timeouts != 0;
  // Rank 0 bounds what it sends (mpi_options); the rank queues what it got.
  o.queue_capacity = std::size_t{1} << 20;
  if (initializer != nullptr) {
    o.initializer = initializer;
  }
  return o;
}

/// Rank 0's task as this rank's pool holds it: the body as it arrived, and
/// the reply built from the local outcome.
class forwarded_op final : public task_op {
 public:
  forwarded_op(rank_pool& owner, std::uint64_t origin, std::int64_t code,
               std::vector<std::byte> message, std::size_t offset, std::size_t max_result)
      : owner_(owner),
        origin_(origin),
        message_(std::move(message)),
        offset_(offset),
        max_result_(max_result) {
    thunk = code;
  }

  std::size_t body_size() const override { return message_.size() - offset_; }
  void encode_body(std::span<std::byte> out) const override {
    std::memcpy(out.data(), message_.data() + offset_, body_size());
  }
  void bind_cancellation(task_canceller& pool) override { owner_.bind(origin_, id, pool); }

  void complete(std::span<const std::byte> result) override {
    if (result.size() > max_result_) {
      // The local pool passes a result that fits its ring; rank 0 asked for
      // pool_options::max_payload (and an MPI message holds at most 2 GiB).
      return fail(std::make_exception_ptr(
          std::system_error(coproc::errc::payload_too_large,
                            "mpi_pool: result of " + std::to_string(result.size()) + " bytes")));
    }
    result_wire r{origin_, status_value, 0};
    reply_ = with_head(&r, sizeof r, result);
    if (!hold_delivery) {
      deliver(false);
    }
  }

  void fail(std::exception_ptr error) override {
    reply_ = reply_for(error);
    if (!hold_delivery) {
      deliver(false);
    }
  }

  void deliver(bool) override {
    owner_.finish(origin_, std::move(reply_));
    delete this;
  }

  void drop() noexcept override {
    owner_.forget(origin_);
    delete this;
  }

 private:
  // A worker's death keeps its exit status as data (status_crash); anything
  // else crosses as the codec carries every exception.
  std::vector<std::byte> reply_for(const std::exception_ptr& error) const {
    try {
      std::rethrow_exception(error);
    } catch (const worker_crashed_error& e) {
      const exit_status& s = e.status();
      result_wire r{origin_, status_crash, 0};
      crash_wire c{s.exited ? 1 : 0, s.code, s.signal, s.core_dumped ? 1 : 0, s.max_rss_kb};
      // The what_arg alone: rank 0's worker_crashed_error adds the code's text.
      std::string text = e.what();
      std::string tail = ": " + e.code().message();
      if (text.ends_with(tail)) {
        text.resize(text.size() - tail.size());
      }
      std::vector<std::byte> m(sizeof r + sizeof c + text.size());
      std::memcpy(m.data(), &r, sizeof r);
      std::memcpy(m.data() + sizeof r, &c, sizeof c);
      std::memcpy(m.data() + sizeof r + sizeof c, text.data(), text.size());
      return m;
    } catch (...) {
      result_wire r{origin_, status_exception, 0};
      auto body = encode_to_vector(capture_current_exception());
      return with_head(&r, sizeof r, body);
    }
  }

  rank_pool& owner_;
  std::uint64_t origin_;
  std::vector<std::byte> message_;  // the MPI message as received; the body follows offset_
  std::size_t offset_;
  std::size_t max_result_;
  std::vector<std::byte> reply_;
};

}  // namespace

rank_pool::rank_pool(const rank_pool_wire& options, std::size_t max_result, void (*initializer)())
    : work_(ctx_.get_executor()), max_result_(max_result) {
  backend_.emplace(ctx_.get_executor(), local_options(options, max_result, initializer));
  loop_ = std::thread([this] { ctx_.run(); });
}

std::vector<rank_pool::reply> rank_pool::stop() {
  if (loop_.joinable()) {
    backend_.reset();  // fails what is left with operation_aborted, kills every worker
    work_.reset();
    loop_.join();
  }
  std::lock_guard lk(m_);
  return std::exchange(replies_, {});
}

void rank_pool::run(std::uint64_t id, std::int64_t thunk, std::optional<retry_policy> retry,
                    std::vector<std::byte> message, std::size_t offset) {
  auto* op = new forwarded_op(*this, id, thunk, std::move(message), offset, max_result_);
  op->retry = retry;
  backend_->start(op);
}

void rank_pool::cancel(std::uint64_t id) {
  std::uint64_t local = 0;
  task_canceller* canceller = nullptr;
  {
    std::lock_guard lk(m_);
    auto it = local_ids_.find(id);
    if (it == local_ids_.end()) {
      return;  // already answered
    }
    local = it->second;
    canceller = canceller_;
  }
  // Outside m_: the pool may complete the task (and reach finish()) inside.
  canceller->cancel(local);
}

void rank_pool::bind(std::uint64_t origin, std::uint64_t local, task_canceller& canceller) {
  std::lock_guard lk(m_);
  local_ids_[origin] = local;
  canceller_ = &canceller;
}

void rank_pool::finish(std::uint64_t origin, std::vector<std::byte> bytes) {
  {
    std::lock_guard lk(m_);
    local_ids_.erase(origin);
    replies_.push_back({tag_result, std::move(bytes)});
  }
  ready_.notify_one();
}

void rank_pool::forget(std::uint64_t origin) {
  std::lock_guard lk(m_);
  local_ids_.erase(origin);
}

std::vector<rank_pool::reply> rank_pool::take(std::chrono::microseconds wait) {
  std::vector<reply> out;
  {
    std::unique_lock lk(m_);
    if (replies_.empty() && wait.count() > 0) {
      ready_.wait_for(lk, wait, [&] { return !replies_.empty(); });
    }
    out.swap(replies_);
  }
  // A crash changes the figures: they follow its reply at once.
  bool crash = std::any_of(out.begin(), out.end(), [](const reply& r) {
    result_wire w{};
    std::memcpy(&w, r.bytes.data(), sizeof w);
    return w.status == status_crash;
  });
  auto now = std::chrono::steady_clock::now();
  if (crash || now >= next_check_) {
    next_check_ = now + std::chrono::milliseconds(50);
    report_changes(out);
  }
  return out;
}

void rank_pool::report_changes(std::vector<reply>& out) {
  // Here, on the MPI thread, not in finish(): the pool may call finish()
  // under its own lock, and stats() takes that lock.
  pool_stats s = backend_->stats();
  stats_wire now{s.workers_alive, s.worker_crashes, s.respawns, s.tasks_retried};
  std::vector<std::int32_t> pids(s.worker_pids.begin(), s.worker_pids.end());
  if (std::memcmp(&now, &sent_stats_, sizeof now) == 0 && pids == sent_pids_) {
    return;
  }
  sent_stats_ = now;
  sent_pids_ = pids;
  out.push_back({tag_stats, with_head(&now, sizeof now, std::as_bytes(std::span(pids)))});
}

}  // namespace coproc::detail
