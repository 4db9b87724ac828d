#pragma once
// Shared-memory state of coproc::queue and the doorbell protocol around it.
//
// A queue is a byte ring of frames (an 8-byte length word, then the encoded
// item, padded to 8 bytes; a frame never wraps: a wrap marker skips the tail
// end) with two cursors. Each cursor is ONE 64-bit word holding a byte
// position (low 40 bits) and an item count (high 24 bits), both modular, so
// a producer commits an item - its bytes and its count - with a single
// release store, and a consumer releases one the same way. Producers
// serialise on put_lock and consumers on get_lock (robust futex locks, see
// sync_state.hpp), so one producer and one consumer never touch each other's
// lock: between them the ring behaves like an SPSC ring.
//
// Owner-died recovery needs no repair: a producer killed while holding
// put_lock wrote only past `head` (unpublished bytes, overwritten by the next
// producer); a consumer killed while holding get_lock never advanced `tail`
// past the item it was copying, so the item stays for the next consumer.

#include <atomic>
#include <climits>
#include <cstdint>

#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/runtime/detail/futex.hpp"
#include "coproc/runtime/detail/sleep_flag.hpp"
#include "coproc/runtime/futex_doorbell.hpp"

namespace coproc::detail {

inline constexpr unsigned queue_pos_bits = 40;
inline constexpr std::uint64_t queue_pos_mask = (std::uint64_t{1} << queue_pos_bits) - 1;
inline constexpr std::uint64_t queue_count_mask = (std::uint64_t{1} << 24) - 1;
/// Largest item capacity: item counts are compared modulo 2^24.
inline constexpr std::uint64_t queue_max_items = (std::uint64_t{1} << 23) - 1;
/// Largest ring: byte positions are compared modulo 2^40.
inline constexpr std::uint64_t queue_max_bytes = std::uint64_t{1} << 32;
inline constexpr std::uint64_t queue_frame_overhead = 8;
inline constexpr std::uint64_t queue_wrap_marker = ~std::uint64_t{0};

/// Bytes between two cursors (tail -> head).
inline std::uint64_t cursor_bytes(std::uint64_t tail, std::uint64_t head) noexcept {
  return (head - tail) & queue_pos_mask;
}
/// Items between two cursors (tail -> head).
inline std::uint64_t cursor_items(std::uint64_t tail, std::uint64_t head) noexcept {
  return ((head >> queue_pos_bits) - (tail >> queue_pos_bits)) & queue_count_mask;
}
inline std::uint64_t cursor_offset(std::uint64_t c, std::uint64_t capacity) noexcept {
  return c & (capacity - 1);  // capacity divides 2^40
}
inline std::uint64_t cursor_advance(std::uint64_t c, std::uint64_t bytes,
                                    std::uint64_t items) noexcept {
  return ((((c >> queue_pos_bits) + items) & queue_count_mask) << queue_pos_bits) |
         ((c + bytes) & queue_pos_mask);
}
inline std::uint64_t align8(std::uint64_t n) noexcept {
  return (n + 7) & ~std::uint64_t{7};
}

struct queue_state {
  queue_state(std::uint64_t cap, std::uint32_t items) noexcept : capacity(cap), max_items(items) {}

  lock_state put_lock;                             ///< producers' robust lock
  lock_state get_lock;                             ///< consumers' robust lock
  alignas(64) std::atomic<std::uint64_t> head{0};  ///< published by producers
  std::atomic<std::int32_t> producer_cpu{-1};      ///< CPU of the last put (spin hint)
  alignas(64) std::atomic<std::uint64_t> tail{0};  ///< released by consumers
  std::atomic<std::int32_t> consumer_cpu{-1};      ///< CPU of the last get (spin hint)
  /// Doorbells: a sequence in bits 1.., bit 0 set while someone sleeps on it;
  /// beside each, the event loops waiting for it on the queue's
  /// futex_doorbell (epoll backend).
  alignas(64) std::atomic<std::uint32_t> not_empty{0};
  std::atomic<std::uint32_t> not_empty_listeners{0};
  alignas(64) std::atomic<std::uint32_t> not_full{0};
  std::atomic<std::uint32_t> not_full_listeners{0};
  alignas(64) std::atomic<std::uint32_t> closed{0};
  const std::uint64_t capacity;  ///< ring bytes, a power of two
  const std::uint32_t max_items;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(queue_state) % 64 == 0);

/// A sleeper announces itself (one of many: detail::sleep_flag's
/// announce_shared) and gets the value to sleep on. The caller must re-check
/// its condition after this.
inline std::uint32_t bell_arm(std::atomic<std::uint32_t>& bell) noexcept {
  return sleep_flag(bell).announce_shared();
}

/// After publishing: wakes the sleepers if any announced itself, else costs
/// one load. Every sleeper is woken (not one): a sleeper that is killed or
/// cancelled after its wake-up must not strand another, and a stale bit
/// (left by a killed sleeper) costs one spurious wake, then clears.
/// Loops that listen on `door` (an async waiter that armed `bell`) are rung
/// after the sequence moved (futex_doorbell::ring: the same handshake on the
/// listeners' count), so a loop either sees the new value or is rung.
inline void bell_ring(std::atomic<std::uint32_t>& bell, const futex_doorbell& door,
                      const std::atomic<std::uint32_t>& listeners) noexcept {
  if (!sleep_flag(bell).take()) {
    return;
  }
  futex_wake(bell, INT_MAX);
  door.ring(listeners);
}

/// Wakes every sleeper and listening loop unconditionally (close()).
inline void bell_force(std::atomic<std::uint32_t>& bell, const futex_doorbell& door,
                       const std::atomic<std::uint32_t>& listeners) noexcept {
  sleep_flag(bell).force();
  futex_wake(bell, INT_MAX);
  door.ring(listeners);
}

/// Holds a lock_state for one operation and releases it on every path.
class lock_hold {
 public:
  explicit lock_hold(lock_state& s) noexcept : s_(&s) {}
  lock_hold(const lock_hold&) = delete;
  lock_hold& operator=(const lock_hold&) = delete;
  ~lock_hold() { release(); }
  void release() noexcept {
    if (s_ != nullptr) {
      lock_release(*s_, this_robust_thread());
      s_ = nullptr;
    }
  }

 private:
  lock_state* s_;
};

}  // namespace coproc::detail
