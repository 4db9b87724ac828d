#pragma once
// The one rule for spinning on a peer process, and its measured budgets.
//
// On these VMs a blocking hand-off between two processes costs ~5 us when
// both share a CPU and 30-50 us across CPUs (waking an idle vCPU), while two
// processes spinning on shared memory across CPUs answer in ~0.1 us. Spinning
// while the peer shares our CPU is pathological: it keeps the peer from
// running (8 ms per round trip measured, against 4.2 us for a plain blocking
// wait). So a side spins only while the peer last ran on another CPU (each
// side publishes sched_getcpu() where the other can read it), and only for
// a bounded time, then sleeps. Used by the pool's loop thread and workers,
// queues and connections.

#include <sched.h>

#include <chrono>
#include <cstdint>

#include "coproc/ipc/shm_ring.hpp"

namespace coproc::detail {

/// The parent's loop thread polls its workers' result rings at most this long
/// before it sleeps (a one-worker round trip across CPUs: 17 -> 1.7 us p50).
inline constexpr std::chrono::nanoseconds loop_spin_budget{20'000};
/// A blocking queue side polls at most this long before it sleeps.
inline constexpr std::chrono::nanoseconds blocking_spin_budget{30'000};
/// An idle worker polls its task ring this many rounds (~20-40 us of pause
/// instructions) before it sleeps.
inline constexpr int worker_spin_rounds = 4000;

/// The CPU this thread runs on now (-1 if the kernel cannot say).
inline int current_cpu() noexcept {
  return ::sched_getcpu();
}

/// Whether spinning for a peer that last ran on `peer_cpu` can pay: only
/// when that is known and another CPU than ours.
inline bool peer_on_other_cpu(int peer_cpu) noexcept {
  return peer_cpu >= 0 && peer_cpu != current_cpu();
}

/// Polls `ready()` until it returns true (then true) or `budget` passed
/// (then false); the clock is read once per 64 polls.
template <class Ready>
bool spin_until(std::chrono::nanoseconds budget, Ready ready) noexcept(noexcept(ready())) {
  const auto start = std::chrono::steady_clock::now();
  for (unsigned i = 1;; ++i) {
    if (ready()) {
      return true;
    }
    shm_ring::cpu_relax();
    if ((i & 63) == 0 && std::chrono::steady_clock::now() - start > budget) {
      return false;
    }
  }
}

}  // namespace coproc::detail
