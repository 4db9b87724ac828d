#pragma once
/// coproc's own error codes and their std::error_category.

#include <string>
#include <system_error>

namespace coproc {

/// Infrastructure failures reported by coproc. A task's own exception arrives
/// as itself (or coproc::remote_error), except through async_submit_ec, which
/// reports it as errc::task_raised.
enum class errc {
  worker_crashed = 1,      ///< the worker running the task died (signal or exit status)
  task_timeout,            ///< the task ran past its deadline; its worker was killed
  pool_stopped,            ///< the pool no longer accepts work
  queue_closed,            ///< the queue was closed while waiting or on use
  frame_corrupt,           ///< bytes from another process failed validation
  frame_too_large,         ///< a frame is larger than the configured maximum
  payload_too_large,       ///< a payload does not fit the shared-memory arena
  end_of_stream,           ///< the peer closed its end or died
  owner_died,              ///< a lock's holder died; the lock was recovered
  peer_died,               ///< the process serving the request died
  uring_unavailable,       ///< io_uring or a needed opcode is refused by the kernel
  function_mismatch,       ///< a callable's identity is unknown in the receiving process
  barrier_broken,          ///< a barrier was aborted, or a party left it while waiting
  pool_broken,             ///< the pool cannot run tasks: its initializer failed, or workers or its
                           ///< zygote died past the restart limit (the message names the reason)
  child_status_discarded,  ///< SIGCHLD ignored in this process: the kernel reaped the child
  child_reaped_elsewhere,  ///< another wait in this process (waitpid(-1)) reaped the child
  task_raised,  ///< the task itself threw (async_submit_ec only: the exception is handed over
                ///< separately; everywhere else it arrives as itself)
  segment_unavailable,  ///< a shared_buffer's segment could not be reopened from its sender
                        ///< (it dropped its last handle first, or /proc refused the access)
};

/// The category of coproc::errc; name() is "coproc".
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace coproc

template <>
struct std::is_error_code_enum<coproc::errc> : std::true_type {};
