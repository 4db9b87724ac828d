#pragma once
// A barrier's shared state and its arrive/break steps (coproc/ipc/barrier.hpp).

#include <atomic>
#include <climits>
#include <cstdint>

#include "coproc/runtime/detail/futex.hpp"

namespace coproc::detail {

inline constexpr std::uint32_t barrier_broken_bit = 0x8000'0000u;

struct alignas(64) barrier_state {
  explicit barrier_state(std::uint32_t n) noexcept : parties(n) {}
  std::atomic<std::uint32_t> gen{0};  ///< generation (31 bits) | broken bit: the futex word
  std::atomic<std::uint32_t> arrived{0};
  std::uint32_t parties;
};

// Arrives and returns the arrival index. The last party starts the next
// generation, unless the barrier broke meanwhile (then `broken` is set).
inline std::uint32_t barrier_arrive(barrier_state& s, std::uint32_t gen_seen,
                                    bool& broken) noexcept {
  std::uint32_t idx = s.arrived.fetch_add(1, std::memory_order_acq_rel);
  broken = false;
  if (idx + 1 == s.parties) {
    s.arrived.store(0, std::memory_order_relaxed);
    std::uint32_t expected = gen_seen;
    if (!s.gen.compare_exchange_strong(expected, (gen_seen + 1) & ~barrier_broken_bit,
                                       std::memory_order_acq_rel)) {
      broken = true;
    }
    futex_wake(s.gen, INT_MAX);
  }
  return idx;
}

inline void barrier_break(barrier_state& s) noexcept {
  s.gen.fetch_or(barrier_broken_bit, std::memory_order_acq_rel);
  futex_wake(s.gen, INT_MAX);
}

}  // namespace coproc::detail
