#pragma once
// The words a worker slot's two ends share (slot_shared) and the headers of
// the frames they exchange (task_header, result_header): the layout that
// slot_channel.hpp's protocol moves, kept apart so the protocol file holds
// only the protocol. Trivially copyable words and offsets only: the slot
// lies in memory both processes map.

#include <atomic>
#include <cstdint>
#include <ctime>

#include "coproc/ipc/shm_ring.hpp"

namespace coproc::detail {

/// Heads every task frame in a worker's task ring.
struct task_header {
  std::uint64_t id;
  std::int64_t thunk;                // code offset of the run_task instance
  std::atomic<std::uint32_t> state;  // task_state: the parent may cancel until taken
  std::uint32_t in_arena;            // 1: the body is in the slot's input arena
  std::uint64_t body_size;
};

enum task_state : std::uint32_t { task_queued = 0, task_taken = 1, task_cancelled = 2 };

/// Heads every result frame in a worker's result ring.
struct result_header {
  std::uint64_t id;
  std::uint32_t status;  // result_status
  std::uint32_t place;   // result_place
  std::uint64_t body_size;
  // How long the task ran in the worker (ns). The worker's own figure, so
  // the parent uses it only to place tasks (worker_loads), never trusts it.
  std::int64_t run_ns;
};

/// Where a result frame's body lies.
enum result_place : std::uint32_t {
  result_inline = 0,  // in the frame, after its header
  result_in_output_arena = 1,
  result_in_input_arena = 2,  // where the task's own arguments came (slot_channel.hpp)
};

/// A result frame with this id carries no task's result: the worker's
/// initializer threw, and the body is the encoded exception (then it leaves).
inline constexpr std::uint64_t initializer_failure_id = 0;

enum result_status : std::uint32_t {
  result_value = 0,      // body: the encoded value
  result_exception = 1,  // body: an encoded exception
  result_emitted = 2,    // a values frame of a streaming task (values_frame.hpp)
};

/// Per-worker words shared by the parent and the worker.
struct slot_shared {
  shm_ring_header tasks;                            // parent -> worker
  shm_ring_header results;                          // worker -> parent
  alignas(64) std::atomic<std::uint64_t> consumed;  // task frames the worker took or skipped
  std::atomic<std::uint64_t> running_id;            // task running now, 0 when none
  std::atomic<std::int64_t> started_ns;             // CLOCK_MONOTONIC start of running_id
  std::atomic<std::int32_t> worker_cpu;
  std::atomic<std::uint32_t> retiring;  // the worker leaves on purpose after its last result
  std::atomic<std::uint32_t> ready;     // the initializer returned: a death is no start failure
  // The parent's word, read by the running task (this_task::stop_requested):
  // the id of the task asked to stop before its kill (pool_options::
  // stop_grace), 0 when none. It names the task, so a later task on this
  // worker never sees an old request, and the parent never clears it.
  std::atomic<std::uint64_t> stop_id;
  alignas(64) std::atomic<std::uint32_t> out_arena_busy;  // futex word: output arena in use
  alignas(64) std::atomic<std::uint64_t> emit_grant;      // emit_credit: the parent's grant
  std::atomic<std::uint32_t> emit_bell;                   // and the emitter's futex word
};

/// CLOCK_MONOTONIC in nanoseconds: the clock of slot_shared::started_ns, the
/// same in every process of the machine.
inline std::int64_t monotonic_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

}  // namespace coproc::detail
