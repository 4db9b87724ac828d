#pragma once
// ready_set: which workers have results to take, one bit per worker slot in
// the pool's shared memory, so that the parent drains only those rings
// instead of polling every worker's ring per doorbell (the cost per task
// would grow with the pool: issue 19).
//
// A worker marks its bit after it published a result frame and before the
// fence of its doorbell (notify_parent): a parent that announced it sleeps
// and then re-checks the set after its own fence sees the bit, or the
// worker sees the announcement and rings. The parent takes a word whole
// (exchange with 0) and then drains the marked rings; a frame published
// after that marks the bit again, so nothing is missed, at worst a ring is
// drained with nothing in it.
//
// Every worker can write every word: a task may clear bits of other
// workers. The set is therefore only a hint. The pool's periodic check
// (every rest_interval while tasks are out) drains every ring, so a lost
// bit delays a result by one check, as a lost doorbell does.

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace coproc::detail {

class ready_set {
 public:
  using word = std::atomic<std::uint64_t>;
  static constexpr std::size_t bits_per_word = 64;

  ready_set() = default;
  ready_set(word* words, std::size_t slots) : words_(words), count_(word_count(slots)) {}

  static std::size_t word_count(std::size_t slots) {
    return (slots + bits_per_word - 1) / bits_per_word;
  }
  static std::size_t bytes(std::size_t slots) { return word_count(slots) * sizeof(word); }

  /// Worker: slot `index` published a result. Release: a parent that takes
  /// the bit sees the frame.
  void mark(std::size_t index) {
    words_[index / bits_per_word].fetch_or(std::uint64_t{1} << (index % bits_per_word),
                                           std::memory_order_release);
  }

  /// Worker: whether slot `index` is marked and not yet taken by the parent.
  bool marked(std::size_t index) const {
    return (words_[index / bits_per_word].load(std::memory_order_relaxed) &
            (std::uint64_t{1} << (index % bits_per_word))) != 0;
  }

  /// Parent: whether any bit is set (a cheap look, for the spin and the
  /// re-check before sleeping).
  bool any() const {
    for (std::size_t i = 0; i < count_; ++i) {
      if (words_[i].load(std::memory_order_relaxed) != 0) {
        return true;
      }
    }
    return false;
  }

  /// Parent: clears the set and calls `fn(index)` for each slot that was
  /// marked, below `slots` (a bit past the pool is a worker's scribble).
  template <class Fn>
  void take(std::size_t slots, Fn&& fn) {
    for (std::size_t i = 0; i < count_; ++i) {
      if (words_[i].load(std::memory_order_relaxed) == 0) {
        continue;  // a plain read first: the exchange would own the line
      }
      std::uint64_t bits = words_[i].exchange(0, std::memory_order_acquire);
      while (bits != 0) {
        std::size_t index = i * bits_per_word + static_cast<std::size_t>(std::countr_zero(bits));
        bits &= bits - 1;
        if (index < slots) {
          fn(index);
        }
      }
    }
  }

 private:
  word* words_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace coproc::detail
