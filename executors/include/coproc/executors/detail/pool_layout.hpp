#pragma once
// The pool's shared memory: one memfd mapping created before the zygote is
// forked, so the zygote and every worker inherit it at the same address.
//
//   [pool_header][ready_set][slot 0][slot 1]...   each slot: see slot_channel.hpp
//
// Only trivially copyable words and offsets live here: no pointers.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "coproc/executors/detail/ready_set.hpp"
#include "coproc/executors/detail/slot_channel.hpp"
#include "coproc/runtime/mapped_region.hpp"

namespace coproc::detail {

struct pool_header {
  // The loop thread's sleep_flag: raised, a worker with a result rings the eventfd.
  alignas(64) std::atomic<std::uint32_t> parent_sleeping;
  std::atomic<std::int32_t> parent_cpu;  // where the parent last ran
  std::int64_t anchor;                   // the parent's image_anchor address: workers check it
};

/// Sizes of one pool's mapping.
struct pool_geometry {
  std::size_t slots;
  std::size_t ring_bytes;
  std::size_t arena_bytes;

  std::size_t header_bytes() const {
    return slot_channel::round(sizeof(pool_header)) + slot_channel::round(ready_set::bytes(slots));
  }
  std::size_t slot_bytes() const { return slot_channel::bytes(ring_bytes, arena_bytes); }
  std::size_t total() const { return header_bytes() + slots * slot_bytes(); }
};

/// The pool's ready set in the mapping at `base`, as seen from this process.
inline ready_set ready_set_at(std::byte* base, const pool_geometry& g) {
  auto* words = reinterpret_cast<ready_set::word*>(base + slot_channel::round(sizeof(pool_header)));
  return ready_set(words, g.slots);
}

/// Slot `index` of the pool mapping at `base`, as seen from this process.
inline slot_channel slot_at(std::byte* base, const pool_geometry& g, std::size_t index) {
  return slot_channel(base + g.header_bytes() + index * g.slot_bytes(), g.ring_bytes,
                      g.arena_bytes);
}

/// Makes slot `index` ready for a new worker (parent only, while no worker uses it).
inline void reset_slot(std::byte* base, const pool_geometry& g, std::size_t index) {
  slot_channel::reset(base + g.header_bytes() + index * g.slot_bytes(), g.ring_bytes);
}

}  // namespace coproc::detail
