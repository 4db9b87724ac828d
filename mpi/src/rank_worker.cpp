// The worker ranks: every rank but 0 runs this loop on its MPI thread. It
// attaches to rank 0's session once the build ids agree, starts the rank's
// own process_pool (rank_pool.hpp) with the session's pool_options, forwards
// each task and cancellation to it, and sends its replies back. No task runs
// in the rank process itself, so no task can end the MPI job.

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "coproc/executors/detail/code_identity.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/errc.hpp"
#include "mpi_wire.hpp"
#include "rank_pool.hpp"

namespace coproc::detail {
namespace {

class rank_session {
 public:
  /// The answer to rank 0's hello: attach (and start the pool) or refuse.
  std::vector<std::byte> hello(std::span<const std::byte> in);
  /// Forwards a task to the pool, or answers at once why it cannot run.
  /// Takes the message: its bytes become the task's body, not a copy.
  void task(std::vector<std::byte> in);
  void cancel(std::span<const std::byte> in);
  /// Ends the session: its pool stops, the replies of what it aborted stay
  /// to be sent.
  void end();
  /// Replies ready to send; waits up to `wait` when there is none.
  std::vector<rank_pool::reply> replies(std::chrono::microseconds wait);

 private:
  void refuse(std::uint64_t id, coproc::errc code, const std::string& why);

  std::optional<rank_pool> pool_;
  std::vector<rank_pool::reply> pending_;  // answered here, not by the pool
  std::string refusal_ = "mpi_pool: this rank runs another build";
};

std::vector<std::byte> rank_session::hello(std::span<const std::byte> in) {
  end();
  hello_wire h{};
  std::string theirs;
  if (in.size() >= sizeof h) {
    std::memcpy(&h, in.data(), sizeof h);
    theirs.assign(reinterpret_cast<const char*>(in.data()) + sizeof h, in.size() - sizeof h);
  }
  bool same = theirs == build_id_text() && h.anchor_offset == own_image().id.anchor_offset &&
              in_main_program(reinterpret_cast<const void*>(&image_anchor));
  // Offsets from rank 0 resolve only into this executable's code.
  allowed_code() = own_image().code;
  refusal_ = "mpi_pool: this rank runs another build";
  ack_wire a{same ? ack_ok : ack_refused, static_cast<std::int32_t>(::getpid()), 0};
  std::string text = build_id_text();
  if (same) {
    try {
      void (*init)() = nullptr;
      if (h.has_initializer != 0) {
        init = reinterpret_cast<void (*)()>(const_cast<void*>(checked_code_address(h.initializer)));
      }
      pool_.emplace(h.pool, std::min<std::uint64_t>(h.max_result, message_limit), init);
      a.workers = pool_->workers();
    } catch (const std::exception& e) {
      a.ok = ack_init_failed;
      text = e.what();
      refusal_ = "mpi_pool: this rank could not start its workers";
    }
  }
  return message(&a, sizeof a, text);
}

void rank_session::task(std::vector<std::byte> in) {
  task_wire t{};
  if (in.size() < sizeof t) {
    return refuse(0, coproc::errc::frame_corrupt, "mpi_pool: short task message");
  }
  std::memcpy(&t, in.data(), sizeof t);
  if (!pool_) {
    return refuse(t.id, coproc::errc::function_mismatch, refusal_);
  }
  std::optional<retry_policy> retry;
  if (t.has_retry != 0) {
    retry = retry_policy{t.retries, t.retry_on_timeout != 0};
  }
  pool_->run(t.id, t.thunk, retry, std::move(in), sizeof t);
}

void rank_session::cancel(std::span<const std::byte> in) {
  cancel_wire c{0};
  if (pool_ && in.size() >= sizeof c) {
    std::memcpy(&c, in.data(), sizeof c);
    pool_->cancel(c.id);
  }
}

void rank_session::end() {
  if (pool_) {
    for (auto& r : pool_->stop()) {
      pending_.push_back(std::move(r));
    }
    pool_.reset();
  }
}

std::vector<rank_pool::reply> rank_session::replies(std::chrono::microseconds wait) {
  if (!pending_.empty() || !pool_) {
    if (pending_.empty()) {
      sleep_for(wait);
    }
    return std::exchange(pending_, {});
  }
  return pool_->take(wait);
}

void rank_session::refuse(std::uint64_t id, coproc::errc code, const std::string& why) {
  result_wire r{id, status_exception, 0};
  std::vector<std::byte> body;
  try {
    throw std::system_error(code, why);
  } catch (...) {
    body = encode_to_vector(capture_current_exception());
  }
  std::vector<std::byte> m(sizeof r + body.size());
  std::memcpy(m.data(), &r, sizeof r);
  std::memcpy(m.data() + sizeof r, body.data(), body.size());
  pending_.push_back({tag_result, std::move(m)});
}

bool send_to_root(const std::vector<std::byte>& m, int tag) {
  return MPI_Send(m.data(), static_cast<int>(m.size()), MPI_BYTE, 0, tag, MPI_COMM_WORLD) ==
         MPI_SUCCESS;
}

bool send_all(const std::vector<rank_pool::reply>& replies) {
  return std::all_of(replies.begin(), replies.end(),
                     [](const rank_pool::reply& r) { return send_to_root(r.bytes, r.tag); });
}

}  // namespace

int rank_worker_loop() {
  rank_session session;
  std::vector<std::byte> in;
  backoff idle;
  for (;;) {
    MPI_Status st;
    int flag = 0;
    if (MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) {
      return 2;
    }
    if (flag == 0) {
      // Nothing from rank 0: send what the pool answered, or wait for it.
      auto replies = session.replies(idle.next_sleep());
      if (!replies.empty()) {
        idle.reset();
      }
      if (!send_all(replies)) {
        return 2;
      }
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
        // Rank 0 stops the ranks once every reply arrived: nothing to send.
        session.end();
        return 0;
      case tag_bye:
        session.end();
        break;
      case tag_hello:
        if (!send_to_root(session.hello(in), tag_ack)) {
          return 2;
        }
        break;
      case tag_task:
        session.task(std::move(in));
        break;
      case tag_cancel:
        session.cancel(in);
        break;
      default:
        break;
    }
  }
}

}  // namespace coproc::detail
