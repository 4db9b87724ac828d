#pragma once
// coproc's one sleep/wake handshake: a side about to sleep says so in a word
// its wakers read, and a waker rings (futex wake, eventfd write) only when
// the word says someone sleeps. Every doorbell of coproc goes through here:
// shm_ring's two bells, the pool's eventfd toward its loop, the queue's
// bells, and futex_doorbell's count of listening loops (semaphore, event
// and condition count their waiters with seq_cst operations instead: see
// docs/ARCHITECTURE.md, "One sleep/wake handshake"). It lives in
// runtime/, the lowest module, because futex_doorbell (runtime/) uses it and
// runtime cannot include ipc/.
//
// Why it cannot lose a wake-up (the memory orders, once):
//
//   sleeper                           waker
//   raise the flag                    publish (a ring head, a queue slot)
//   full fence           (F_s)        full fence            (F_w)
//   re-check the condition            read the flag
//   sleep only if still unmet         ring only if raised
//
// The two fences are memory_order_seq_cst, so they are totally ordered. If
// F_s comes first, the waker's read (after F_w) sees the raised flag or a
// later value and rings; if F_w comes first, the sleeper's re-check (after
// F_s) sees what the waker published and does not sleep ([atomics.fences]).
// Without either fence, x86 may satisfy the later load before the earlier
// store leaves the store buffer: both sides miss each other, the sleeper
// sleeps for ever. Without the re-check the sleeper misses a publish that
// came before its flag. The re-check and the publish themselves may use any
// memory order; the fences pair them up, which is why they live here and
// not at each call site.
//
// A ring that lands between the sleeper's re-check and its futex wait is not
// lost either: a ring changes the word (it takes the flag), and the sleeper
// waits on the value announce() returned, so FUTEX_WAIT returns EAGAIN.
//
// Encoding of a flag word: bit 0 is raised while a sleeper announced itself;
// bits 1.. count the rings that took it, so the word never returns to a
// value a sleeper announced (no ABA for a futex wait on it). A count word
// (listeners) counts sleepers instead; the two are used on different words.

#include <atomic>
#include <cstdint>

namespace coproc::detail {

/// A view of a 32-bit word in (shared) memory that carries the handshake
/// above. Cheap to build at each use: it holds one pointer.
class sleep_flag {
 public:
  explicit sleep_flag(std::atomic<std::uint32_t>& word) noexcept : w_(&word) {}

  // ---- the sleeper, on a flag word ----

  /// For the word's only sleeper (SPSC rings, the pool's loop thread):
  /// raises the flag, then fences. Re-check the condition after this; sleep
  /// only if it still holds, on the value returned (a futex wait on it ends
  /// at any ring). A plain store: only this side ever raises the flag, and
  /// wakers change the word only while it is raised. A flag still raised
  /// from an earlier announcement is left as it is.
  std::uint32_t announce() noexcept {
    std::uint32_t v = w_->load(std::memory_order_relaxed);
    if ((v & 1) == 0) {
      v |= 1;
      w_->store(v, std::memory_order_relaxed);
    }
    full_fence();
    return v;
  }

  /// As announce(), for one of several sleepers (a queue's many consumers
  /// or producers, in several processes): raises the flag by a
  /// compare-and-swap so no other sleeper's announcement or ring is undone.
  /// Never cancel() such a word: another sleeper may still rely on the flag;
  /// a flag nobody needs any more costs its next waker one spurious ring.
  std::uint32_t announce_shared() noexcept {
    std::uint32_t v = w_->load(std::memory_order_relaxed);
    while ((v & 1) == 0 && !w_->compare_exchange_weak(v, v | 1, std::memory_order_relaxed,
                                                      std::memory_order_relaxed)) {
    }
    full_fence();
    return v | 1;
  }

  /// The only sleeper lowers a flag no ring took (its re-check found work,
  /// it woke for another reason, its sleep timed out), so wakers stop
  /// ringing. Costs one load when a ring already took it. A plain store: a
  /// ring racing with it is one spurious wake-up, and it may set the ring
  /// count back, which only a futex wait on an announced value could notice
  /// and this side is not waiting.
  void cancel() noexcept {
    const std::uint32_t v = w_->load(std::memory_order_relaxed);
    if ((v & 1) != 0) {
      w_->store(v & ~std::uint32_t{1}, std::memory_order_relaxed);
    }
  }

  // ---- the waker, on a flag word, after publishing ----

  /// Fences, then takes the flag if a sleeper raised it: lowers it and
  /// counts the ring, so one of several racing wakers wins. True: ring now
  /// (wake every sleeper of a shared word). False: nobody announced a
  /// sleep, and it cost one load.
  bool take() noexcept {
    full_fence();
    std::uint32_t v = w_->load(std::memory_order_relaxed);
    while ((v & 1) != 0 && !w_->compare_exchange_weak(v, v + 1, std::memory_order_relaxed,
                                                      std::memory_order_relaxed)) {
    }
    return (v & 1) != 0;
  }

  /// Changes the word whether anyone announced a sleep or not (close(): every
  /// sleeper and every later announcement must see it). Ring after it.
  void force() noexcept { w_->fetch_add(2, std::memory_order_seq_cst); }

  // ---- a count word: sleepers that come and go on their own ----

  /// One more sleeper (a loop listening for an eventfd), then fences;
  /// re-check after it, as after announce().
  void join() noexcept {
    w_->fetch_add(1, std::memory_order_relaxed);
    full_fence();
  }
  /// That sleeper is gone (it woke or was cancelled).
  void leave() noexcept { w_->fetch_sub(1, std::memory_order_relaxed); }
  /// The waker's side of a count word: fences, then whether any sleeper
  /// joined. Static: a waker only reads the count (futex_doorbell::ring
  /// takes it const).
  static bool joined(const std::atomic<std::uint32_t>& count) noexcept {
    full_fence();
    return count.load(std::memory_order_relaxed) != 0;
  }

 private:
  static void full_fence() noexcept { std::atomic_thread_fence(std::memory_order_seq_cst); }

  std::atomic<std::uint32_t>* w_;
};

}  // namespace coproc::detail
