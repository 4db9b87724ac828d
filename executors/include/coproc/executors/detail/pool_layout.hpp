#pragma once
// The pool's shared memory: one memfd mapping created before the zygote is
// forked, so the zygote and every worker inherit it at the same address.
//
//   [pool_header][slot 0][slot 1]...   each slot:
//   [slot_shared][task ring data][result ring data][input arena][output arena]
//
// Only trivially copyable words and offsets live here: no pointers.

#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "coproc/ipc/shm_ring.hpp"
#include "coproc/runtime/mapped_region.hpp"

namespace coproc::detail {

struct pool_header {
  alignas(64) std::atomic<std::uint32_t> parent_sleeping;  // set: ring the eventfd
  std::atomic<std::int32_t> parent_cpu;                    // where the parent last ran
  std::int64_t anchor;  // the parent's image_anchor address: workers check it
};

/// CLOCK_MONOTONIC in nanoseconds: the clock of slot_shared::started_ns, the
/// same in every process of the machine.
inline std::int64_t monotonic_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

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
  std::uint32_t in_arena;
  std::uint64_t body_size;
};

/// A result frame with this id carries no task's result: the worker's
/// initializer threw, and the body is the encoded exception (then it leaves).
inline constexpr std::uint64_t initializer_failure_id = 0;

enum result_status : std::uint32_t {
  result_value = 0,      // body: the encoded value
  result_exception = 1,  // body: an encoded exception
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
  alignas(64) std::atomic<std::uint32_t> out_arena_busy;  // futex word: output arena in use
};

/// Sizes of one pool's mapping.
struct pool_geometry {
  std::size_t slots;
  std::size_t ring_bytes;
  std::size_t arena_bytes;

  static constexpr std::size_t page = 4096;
  static constexpr std::size_t round(std::size_t n) { return (n + page - 1) / page * page; }

  std::size_t header_bytes() const { return round(sizeof(pool_header)); }
  std::size_t slot_bytes() const {
    return round(sizeof(slot_shared)) + 2 * ring_bytes + 2 * round(arena_bytes);
  }
  std::size_t total() const { return header_bytes() + slots * slot_bytes(); }
};

/// A process-local view of one slot: pointers computed from the mapping.
struct slot_view {
  slot_shared* shared = nullptr;
  shm_ring tasks;
  shm_ring results;
  std::byte* in_arena = nullptr;
  std::byte* out_arena = nullptr;
  std::size_t arena_bytes = 0;

  slot_view() = default;
  slot_view(std::byte* base, const pool_geometry& g, std::size_t index) {
    std::byte* p = base + g.header_bytes() + index * g.slot_bytes();
    shared = reinterpret_cast<slot_shared*>(p);
    p += pool_geometry::round(sizeof(slot_shared));
    // The capacity from the geometry, never from the header: a worker can
    // write the header's words.
    tasks = shm_ring(&shared->tasks, p, g.ring_bytes);
    results = shm_ring(&shared->results, p + g.ring_bytes, g.ring_bytes);
    in_arena = p + 2 * g.ring_bytes;
    out_arena = in_arena + pool_geometry::round(g.arena_bytes);
    arena_bytes = g.arena_bytes;
  }

  /// Makes a slot ready for a new worker (parent only, while no worker uses it).
  static void reset(std::byte* base, const pool_geometry& g, std::size_t index) {
    slot_view v(base, g, index);
    auto* s = new (v.shared) slot_shared;  // words are trivially constructible
    shm_ring::init(&s->tasks, g.ring_bytes);
    shm_ring::init(&s->results, g.ring_bytes);
    s->consumed.store(0, std::memory_order_relaxed);
    s->running_id.store(0, std::memory_order_relaxed);
    s->started_ns.store(0, std::memory_order_relaxed);
    s->worker_cpu.store(-1, std::memory_order_relaxed);
    s->retiring.store(0, std::memory_order_relaxed);
    s->ready.store(0, std::memory_order_relaxed);
    s->out_arena_busy.store(0, std::memory_order_release);
  }
};

/// Largest body sent inline in a ring frame; larger ones use the arena.
inline std::size_t inline_limit(const shm_ring& ring) {
  std::size_t cap = ring.max_frame() - sizeof(task_header);
  return cap < 64 * 1024 ? cap : 64 * 1024;
}

}  // namespace coproc::detail
