#pragma once
// mpi_pool's rank 0: one runtime per process, whose MPI thread is the
// progress thread (sends tasks, receives results) while the event loop runs
// elsewhere. Pool operations (mpi_pool.cpp) run on any thread under m_; the
// progress loop is mpi_progress.cpp. Private to mpi/src.

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "coproc/executors/detail/pool_lifecycle.hpp"
#include "coproc/executors/detail/task_ledger.hpp"
#include "coproc/executors/detail/task_op.hpp"
#include "coproc/mpi/mpi_pool.hpp"
#include "coproc/runtime/errc.hpp"
#include "mpi_wire.hpp"

namespace coproc::detail {

inline std::exception_ptr error_ptr(coproc::errc e, const char* what) {
  return std::make_exception_ptr(std::system_error(e, what));
}

class runtime {
 public:
  // Set once by the MPI thread before init() returns.
  int rank = -1;
  int size = 0;

  void init(int* argc, char*** argv);

  static runtime& instance() {
    static auto* r = new runtime;  // leaked: the atexit handler needs it last
    return *r;
  }

  // --- pool operations (any thread) -------------------------------------

  std::size_t open(const pool_options& options, const mpi_options& mpi);

  void close();

  void start(task_op* op);

  void cancel(std::uint64_t id);

  void shutdown(shutdown_mode mode, std::function<void()> done);

  pool_stats stats() const;

 private:
  struct outgoing {
    int rank;
    int tag;
    std::vector<std::byte> bytes;
    std::uint64_t task = 0;  // for tasks: its id, failed if the send fails
  };
  struct in_flight_send {
    MPI_Request req;
    std::vector<std::byte> bytes;
  };

  void thread_main(int* argc, char*** argv, std::promise<int>& ready);

  /// Rank 0 at exit: tells the worker ranks to stop, then finalises.
  void finish();

  /// Under the lock: the shutdown handler goes to the ledger's deliveries
  /// once no task is left.
  void finish_if_idle_locked();

  /// Runs `step` under the lock, then what it settled outside the lock.
  template <class Step>
  void locked(Step&& step) {
    deliveries out;
    {
      std::lock_guard lk(m_);
      step();
      out = ledger_.take_deliveries();
    }
    out.run(false);
  }

  bool has_work_locked() const;

  int free_rank_locked() const;

  /// Under the lock: control messages, then tasks for ranks with room.
  void collect_locked(std::vector<outgoing>& out);

  void progress_loop();

  void on_result(int source, std::span<const std::byte> m);

  void on_ack(int source, std::span<const std::byte> m);

  void on_stats(int source, std::span<const std::byte> m);

  void rank_failed(int rank, std::uint64_t task);

  void fail_everything();

  std::once_flag once_;
  std::thread thread_;
  int worker_status_ = 0;

  mutable std::mutex m_;
  std::condition_variable cv_;      // wakes the progress thread
  std::condition_variable opened_;  // wakes a constructor waiting for acks
  // The session's lifecycle, the one enum of every pool (running: accepts
  // tasks; draining: async_shutdown asked; closed: no mpi_pool open). The
  // two flags are the process's, not a session's: stopping_, rank 0 exits;
  // fatal_, an MPI call failed and no later session can open.
  pool_state session_ = pool_state::closed;
  bool stopping_ = false;
  bool fatal_ = false;
  std::size_t per_rank_ = 0;  // mpi_options::tasks_per_rank (0: twice a rank's workers)
  int acks_pending_ = 0;
  std::string hello_error_;
  coproc::errc hello_code_ = coproc::errc::function_mismatch;
  std::size_t max_payload_ = message_limit;
  // The session's tasks: admission (queue_capacity plus what the ranks can
  // hold), queued and sent tasks, counters, completions run after m_.
  task_ledger ledger_;
  std::vector<outgoing> control_;
  // Per rank (index = rank; 0 unused): the tasks it holds until their replies
  // come (cancelled ones too), as many as slots_ at once; the workers its ack
  // said its pool has (its stats count only those running now); its pool's
  // figures.
  std::vector<std::size_t> load_;
  std::vector<std::size_t> slots_;
  std::vector<std::size_t> pool_sizes_;
  std::vector<rank_stats> ranks_;
  std::size_t expected_ = 0;  // results still to come
  std::function<void()> shutdown_done_;
};

/// The build id rank 0 announces: the real one unless a test set another.
const std::string& announced_build_id();

}  // namespace coproc::detail
