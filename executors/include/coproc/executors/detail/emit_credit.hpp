#pragma once
// emit_credit: how many values a streaming task may have emitted, told by
// the parent to the worker through one word of the worker's slot.
//
// A streaming task's worker may be `buffer` values ahead of its caller's
// reads. The parent grants `read + buffer` whenever the caller has read a
// batch of values (and before the caller waits), so an emitter blocks only
// while that many values are unread. The grant names the task it is for (the
// low bits of its id, in the same 64-bit word, so one store publishes both):
// a grant still in the word from an earlier stream of the same worker gives
// a new task nothing, and a task the word does not name starts with `buffer`.
// The worker trusts the word (the parent wrote it); the parent trusts no
// count of the worker's and checks what arrives against what it granted
// (task_stream's state).

#include <atomic>
#include <cstdint>

#include "coproc/runtime/detail/futex.hpp"
#include "coproc/runtime/detail/sleep_flag.hpp"

namespace coproc::detail {

class emit_credit {
 public:
  static constexpr unsigned count_bits = 40;  // 10^12 values of one task
  static constexpr std::uint64_t count_mask = (std::uint64_t{1} << count_bits) - 1;

  /// `grant`: the slot's grant word; `bell`: the futex word a blocked emitter sleeps on.
  emit_credit(std::atomic<std::uint64_t>& grant, std::atomic<std::uint32_t>& bell) noexcept
      : grant_(&grant), bell_(&bell) {}

  // ---- parent ----

  /// Task `id` may have emitted `allowed` values in all; wakes its emitter
  /// if it sleeps.
  void grant(std::uint64_t id, std::uint64_t allowed) noexcept {
    if (allowed > count_mask) {
      allowed = count_mask;
    }
    grant_->store(tag(id) | allowed, std::memory_order_release);
    wake();
  }

  /// Wakes a blocked emitter to look again (after a grant, or after its task
  /// was asked to stop: it then drops its value instead of waiting).
  void wake() noexcept {
    if (sleep_flag(*bell_).take()) {
      futex_wake(*bell_);
    }
  }

  // ---- worker ----

  /// How many values task `id` may have emitted: its grant, or `buffer`
  /// when the word names another task.
  std::uint64_t allowed(std::uint64_t id, std::uint64_t buffer) const noexcept {
    const std::uint64_t w = grant_->load(std::memory_order_acquire);
    return (w & ~count_mask) == tag(id) ? w & count_mask : buffer;
  }

  /// Waits until task `id`, which emitted `emitted` values, may emit one
  /// more; false as soon as `stop()` says so (its publisher calls wake()). Sleeps at most `recheck`
  /// at a time and calls `on_wake()` after each sleep (the worker's orphan check).
  template <class Stop, class OnWake>
  bool wait(std::uint64_t id, std::uint64_t emitted, std::uint64_t buffer, const timespec& recheck,
            Stop&& stop, OnWake&& on_wake) {
    sleep_flag bell(*bell_);
    for (;;) {
      const std::uint32_t v = bell.announce();
      if (stop()) {
        bell.cancel();
        return false;
      }
      if (emitted < allowed(id, buffer)) {
        bell.cancel();
        return true;
      }
      futex_wait(*bell_, v, &recheck);
      on_wake();
    }
  }

 private:
  /// The task's mark in the word's top 24 bits; never 0, so a word reset
  /// to 0 names no task.
  static std::uint64_t tag(std::uint64_t id) noexcept {
    constexpr std::uint64_t tags = (std::uint64_t{1} << (64 - count_bits)) - 1;
    return (id % tags + 1) << count_bits;
  }

  std::atomic<std::uint64_t>* grant_;
  std::atomic<std::uint32_t>* bell_;
};

}  // namespace coproc::detail
