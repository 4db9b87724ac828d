#include "coproc/runtime/errc.hpp"

namespace coproc {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "coproc"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::worker_crashed:
        return "worker process crashed";
      case errc::task_timeout:
        return "task timed out";
      case errc::pool_stopped:
        return "pool stopped";
      case errc::queue_closed:
        return "queue closed";
      case errc::frame_corrupt:
        return "corrupted frame";
      case errc::frame_too_large:
        return "frame larger than the configured maximum";
      case errc::payload_too_large:
        return "payload larger than the shared-memory arena";
      case errc::end_of_stream:
        return "end of stream: the peer closed or died";
      case errc::owner_died:
        return "the previous owner died while holding the lock";
      case errc::peer_died:
        return "the serving process died";
      case errc::uring_unavailable:
        return "io_uring or a required opcode is unavailable";
      case errc::function_mismatch:
        return "callable identity not valid in this process";
      case errc::barrier_broken:
        return "the barrier is broken";
      case errc::pool_broken:
        return "the pool is broken: it cannot start workers";
      case errc::child_status_discarded:
        return "the child's exit status is lost: SIGCHLD is ignored in this process (SIG_IGN or "
               "SA_NOCLDWAIT), so the kernel reaped the child itself";
      case errc::child_reaped_elsewhere:
        return "the child's exit status is lost: another wait in this process (a waitpid(-1), "
               "a SIGCHLD handler) reaped the child";
      case errc::task_raised:
        return "the task threw an exception";
      case errc::segment_unavailable:
        return "a shared buffer's segment could not be reopened from the process that sent it "
               "(it no longer holds the buffer, or /proc/<pid>/fd refused the access)";
    }
    return "unknown coproc error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace coproc
