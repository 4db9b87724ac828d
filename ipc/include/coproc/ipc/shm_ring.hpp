#pragma once
/// A bounded single-producer single-consumer ring of variable-size frames in
/// shared memory, with a doorbell the producer rings only when the consumer sleeps.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <new>
#include <span>

#include "coproc/runtime/detail/futex.hpp"
#include "coproc/runtime/detail/sleep_flag.hpp"

namespace coproc {

/// The part of a ring that lives in shared memory. Trivially copyable words
/// only (no pointers), so any process mapping it can use it at any address.
struct shm_ring_header {
  alignas(64) std::atomic<std::uint64_t> head;  // bytes published by the producer
  alignas(64) std::atomic<std::uint64_t> tail;  // bytes released by the consumer
  // The bells are detail::sleep_flag words (the sleeper's flag and a ring
  // count in one futex word): the consumer sleeps on `doorbell`, a producer
  // waiting for room on `space_bell`.
  alignas(64) std::atomic<std::uint32_t> doorbell;
  std::atomic<std::uint32_t> space_bell;
  std::uint64_t capacity;  // data bytes, a power of two
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

/// A process-local view of a ring: a header and its data area, both in a
/// shared mapping. One process produces, one consumes. Frames are 8-byte
/// aligned, each preceded by an 8-byte length word; a frame never wraps.
///
/// Nothing the peer can write is trusted: the capacity and this side's own
/// cursor (the producer's head, the consumer's tail) are kept in this object
/// and only published to the header; the peer's cursor is read from the
/// header and checked against them (8-byte grid, never back, never more than
/// the capacity apart). A check that fails marks the ring corrupt: try_peek
/// and try_reserve then return empty spans for ever (see corrupt()), so a
/// peer that overwrote the shared words can make this side stop, never read
/// or write outside the data area.
/// Thread safety: one producer and one consumer at a time.
class shm_ring {
 public:
  static constexpr std::size_t frame_overhead = 8;

  shm_ring() = default;
  /// Attaches to a ring of `capacity` data bytes (a power of two). The
  /// header's cursors are read once, here: attach before the peer runs (the
  /// pool attaches right after init()).
  shm_ring(shm_ring_header* header, std::byte* data, std::uint64_t capacity) noexcept
      : h_(header),
        data_(data),
        capacity_(capacity),
        head_(header->head.load(std::memory_order_relaxed)),
        tail_(header->tail.load(std::memory_order_relaxed)),
        cached_tail_(tail_),
        cached_head_(tail_) {}
  /// Attaches with the capacity read from the header (a ring this process
  /// initialised itself).
  shm_ring(shm_ring_header* header, std::byte* data) noexcept
      : shm_ring(header, data, header->capacity) {}

  /// Initialises a header in fresh shared memory (capacity: a power of two).
  static void init(shm_ring_header* h, std::uint64_t capacity) noexcept {
    h->head.store(0, std::memory_order_relaxed);
    h->tail.store(0, std::memory_order_relaxed);
    h->doorbell.store(0, std::memory_order_relaxed);
    h->space_bell.store(0, std::memory_order_relaxed);
    h->capacity = capacity;
  }

  /// The largest frame payload the ring accepts.
  std::size_t max_frame() const noexcept { return capacity_ / 2 - frame_overhead; }

  // ---- producer side ----

  /// Space for a frame of `n` payload bytes, or an empty span while the ring is
  /// too full (or corrupt). Publish it with commit(n).
  std::span<std::byte> try_reserve(std::size_t n) noexcept {
    if (corrupt_) {
      return {};
    }
    std::uint64_t need = frame_overhead + align8(n);
    std::uint64_t pos = head_ & (capacity_ - 1);
    std::uint64_t to_end = capacity_ - pos;
    std::uint64_t total = need <= to_end ? need : to_end + need;  // skip the tail end
    if (!has_room(total)) {
      return {};
    }
    if (need > to_end) {
      write_len(pos, wrap_marker);
      pending_skip_ = to_end;
      pos = 0;
    } else {
      pending_skip_ = 0;
    }
    return {data_ + pos + frame_overhead, n};
  }

  /// Publishes the frame last reserved, of `n` bytes (n <= the reserved size).
  void commit(std::size_t n) noexcept {
    head_ += pending_skip_;
    write_len(head_ & (capacity_ - 1), n);
    head_ += frame_overhead + align8(n);
    h_->head.store(head_, std::memory_order_release);
  }

  /// Bytes this producer has published so far (its own count, not the header's).
  std::uint64_t published() const noexcept { return head_; }

  /// True once the consumer released every byte published up to `position`
  /// (a value of published()). Reads the consumer's tail and checks it as
  /// try_reserve() does; a tail off those terms marks the ring corrupt and
  /// gives false.
  bool released_through(std::uint64_t position) noexcept {
    if (corrupt_) {
      return false;
    }
    if (head_ - cached_tail_ <= head_ - position) {
      return true;
    }
    std::uint64_t tail = h_->tail.load(std::memory_order_acquire);
    if ((tail & 7) != 0 || head_ - tail > head_ - cached_tail_) {
      corrupt_ = true;
      return false;
    }
    cached_tail_ = tail;
    return head_ - cached_tail_ <= head_ - position;
  }

  /// Wakes the consumer if it announced that it sleeps. Call after commits
  /// (once per batch is enough).
  void notify() noexcept {
    if (detail::sleep_flag(h_->doorbell).take()) {
      detail::futex_wake(h_->doorbell);
    }
  }

  /// Blocks the producer until a frame of `n` bytes fits, then reserves it
  /// (blocking code only). The consumer wakes it through notify_producer();
  /// the sleep is also bounded by `recheck` (a wake-up lost to a peer that
  /// overwrote the flags costs at most that). Returns an empty span when the
  /// ring turned out corrupt, or when `give_up()` returns true.
  template <class GiveUp>
  std::span<std::byte> reserve_wait(std::size_t n, const timespec& recheck,
                                    GiveUp give_up) noexcept {
    for (;;) {
      if (auto out = try_reserve(n); out.data() != nullptr || corrupt_) {
        return out;
      }
      detail::sleep_flag bell(h_->space_bell);
      std::uint32_t seen = bell.announce();
      if (auto out = try_reserve(n); out.data() != nullptr || corrupt_) {
        bell.cancel();
        return out;
      }
      detail::futex_wait(h_->space_bell, seen, &recheck);
      bell.cancel();
      if (give_up()) {
        return {};
      }
    }
  }
  std::span<std::byte> reserve_wait(std::size_t n) noexcept {
    timespec second{1, 0};
    return reserve_wait(n, second, [] { return false; });
  }

  // ---- consumer side ----

  /// Wakes a producer blocked in reserve_wait(). Call after pops (once per batch).
  void notify_producer() noexcept {
    if (detail::sleep_flag(h_->space_bell).take()) {
      detail::futex_wake(h_->space_bell);
    }
  }

  /// True once this side met a word no peer following the protocol could
  /// have written (a length word, or the peer's cursor): the shared memory
  /// was overwritten. It stays true; the ring is unusable from then on.
  bool corrupt() const noexcept { return corrupt_; }

  /// The next frame's payload, or an empty span when the ring is empty (or
  /// corrupt). The bytes stay valid until pop().
  std::span<std::byte> try_peek() noexcept {
    if (corrupt_) {
      return {};
    }
    if (tail_ == cached_head_) {
      if (!load_head()) {
        return {};
      }
      if (tail_ == cached_head_) {
        return {};
      }
    }
    std::uint64_t pos = tail_ & (capacity_ - 1);
    std::uint64_t len = read_len(pos);
    if (len == wrap_marker) {
      // The producer skipped the tail end: a frame must follow at 0.
      std::uint64_t skip = capacity_ - pos;
      if (skip + frame_overhead > cached_head_ - tail_) {
        corrupt_ = true;
        return {};
      }
      tail_ += skip;
      h_->tail.store(tail_, std::memory_order_release);
      pos = 0;
      len = read_len(0);
    }
    // Length words come from another process: a frame must fit both the ring
    // and what the producer published, or the memory was overwritten.
    if (len > max_frame() || pos + frame_overhead + align8(len) > capacity_ ||
        frame_overhead + align8(len) > cached_head_ - tail_) {
      corrupt_ = true;
      return {};
    }
    peek_len_ = len;
    return {data_ + pos + frame_overhead, static_cast<std::size_t>(len)};
  }

  /// Releases the frame returned by the last try_peek().
  void pop() noexcept {
    tail_ += frame_overhead + align8(peek_len_);
    h_->tail.store(tail_, std::memory_order_release);
  }

  /// True when the producer published nothing past this consumer's tail (a
  /// hint: a head that is not on this side's terms reads as not empty, and
  /// the next try_peek() finds it corrupt).
  bool empty() const noexcept { return h_->head.load(std::memory_order_acquire) == tail_; }

  /// Blocks the consumer until the ring is not empty (blocking code only:
  /// workers, never the event loop). `spin` polls that many times first.
  /// With a `timeout`, returns false when it passed with the ring still empty.
  bool wait_not_empty(int spin = 0, const timespec* timeout = nullptr) noexcept {
    for (int i = 0; i < spin; ++i) {
      if (!empty()) {
        return true;
      }
      cpu_relax();
    }
    while (empty()) {
      detail::sleep_flag bell(h_->doorbell);
      std::uint32_t seen = bell.announce();
      int err = empty() ? detail::futex_wait(h_->doorbell, seen, timeout) : 0;
      bell.cancel();
      if (err == ETIMEDOUT && empty()) {
        return false;
      }
    }
    return true;
  }

  shm_ring_header* header() const noexcept { return h_; }

  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

 private:
  static constexpr std::uint64_t wrap_marker = ~std::uint64_t{0};
  static std::uint64_t align8(std::uint64_t n) noexcept {
    return (n + 7) & ~std::uint64_t{7};
  }

  /// Reads the producer's head and checks it: on the 8-byte grid, not behind
  /// the last one seen, at most a capacity ahead of this consumer's tail.
  bool load_head() noexcept {
    std::uint64_t head = h_->head.load(std::memory_order_acquire);
    if ((head & 7) != 0 || head - tail_ > capacity_ || head - tail_ < cached_head_ - tail_) {
      corrupt_ = true;
      return false;
    }
    cached_head_ = head;
    return true;
  }

  /// True when `total` bytes fit past head_. Reads the consumer's tail only
  /// when the last one seen leaves too little room, and checks it: on the
  /// grid, not behind the last one seen, not past this producer's head.
  bool has_room(std::uint64_t total) noexcept {
    if (head_ + total - cached_tail_ <= capacity_) {
      return true;
    }
    std::uint64_t tail = h_->tail.load(std::memory_order_acquire);
    if ((tail & 7) != 0 || head_ - tail > head_ - cached_tail_) {
      corrupt_ = true;
      return false;
    }
    cached_tail_ = tail;
    return head_ + total - cached_tail_ <= capacity_;
  }
  void write_len(std::uint64_t pos, std::uint64_t len) noexcept {
    std::memcpy(data_ + pos, &len, sizeof len);
  }
  std::uint64_t read_len(std::uint64_t pos) const noexcept {
    std::uint64_t len;
    std::memcpy(&len, data_ + pos, sizeof len);
    return len;
  }

  shm_ring_header* h_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;     // this side's copy: the header's word is the peer's to write
  std::uint64_t head_ = 0;         // producer: what it published
  std::uint64_t tail_ = 0;         // consumer: what it released
  std::uint64_t cached_tail_ = 0;  // producer's last checked view of tail
  std::uint64_t cached_head_ = 0;  // consumer's last checked view of head
  std::uint64_t pending_skip_ = 0;
  std::uint64_t peek_len_ = 0;
  bool corrupt_ = false;
};

}  // namespace coproc
