#pragma once
// Owner-death detection for coproc's futex locks through the kernel's robust
// futex list. glibc registers one robust list per thread (set_robust_list) for
// its robust pthread mutexes; a thread may register only one, so coproc links
// its lock words into glibc's list, laid out the way the kernel expects: the
// list entry sits at (word - futex_offset), futex_offset read from glibc's own
// list head. When a thread dies holding such a word (even by SIGKILL), the
// kernel sets FUTEX_OWNER_DIED in it, clears the TID and wakes one waiter:
// waiters never depend on timeouts or pid liveness checks (no pid-reuse race).
//
// The entry's `next` pointer lives in shared memory, but only its owner (the
// holding thread) and the kernel acting for that thread ever read it, in the
// holder's own address space; other processes never dereference it.

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace coproc::detail {

inline constexpr std::uint32_t futex_tid_mask = FUTEX_TID_MASK;
inline constexpr std::uint32_t futex_waiters = FUTEX_WAITERS;
inline constexpr std::uint32_t futex_owner_died = FUTEX_OWNER_DIED;

/// Where a lock word's robust list entry may live: bytes [16, 64) of its
/// 64-byte block (the word itself is at offset 0).
inline constexpr long robust_node_min = 16;
inline constexpr long robust_node_max = 56;

/// The calling thread's identity and robust list. Cached per thread and
/// refreshed in a fork child (pthread_atfork), so the fast path makes no
/// system call.
struct robust_thread {
  std::uint32_t tid = 0;
  robust_list_head* head = nullptr;  ///< glibc's list head; null: no owner-death detection
  long node_offset = 0;              ///< entry address - word address (= -futex_offset)
};

inline thread_local robust_thread robust_thread_cache;

inline void robust_thread_init(robust_thread& t) noexcept {
  // The child of fork() has a new TID but inherits this thread_local.
  static const int registered =
      ::pthread_atfork(nullptr, nullptr, [] { robust_thread_cache.tid = 0; });
  (void)registered;
  t.tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  robust_list_head* head = nullptr;
  std::size_t len = 0;
  t.head = nullptr;
  t.node_offset = 0;
  if (::syscall(SYS_get_robust_list, 0, &head, &len) == 0 && head != nullptr &&
      len == sizeof(robust_list_head)) {
    long off = -head->futex_offset;
    if (off >= robust_node_min && off <= robust_node_max &&
        off % static_cast<long>(alignof(void*)) == 0) {
      t.head = head;
      t.node_offset = off;
    }
  }
}

inline robust_thread& this_robust_thread() noexcept {
  robust_thread& t = robust_thread_cache;
  if (t.tid == 0) [[unlikely]] {
    robust_thread_init(t);
  }
  return t;
}

inline robust_list* robust_node(const robust_thread& t, std::atomic<std::uint32_t>& word) noexcept {
  return reinterpret_cast<robust_list*>(reinterpret_cast<char*>(&word) + t.node_offset);
}

/// Marks `word` as the operation in progress: a death between here and
/// robust_op_done() is still seen by the kernel (it checks the TID in the word).
inline void robust_op_begin(robust_thread& t, std::atomic<std::uint32_t>& word) noexcept {
  if (t.head) {
    t.head->list_op_pending = robust_node(t, word);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
}

inline void robust_op_done(robust_thread& t) noexcept {
  if (t.head) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.head->list_op_pending = nullptr;
  }
}

/// Links a word this thread now owns into its robust list (at the front, as
/// glibc does, so the usual LIFO unlock unlinks in O(1)).
inline void robust_link(robust_thread& t, std::atomic<std::uint32_t>& word) noexcept {
  if (t.head) {
    robust_list* node = robust_node(t, word);
    node->next = t.head->list.next;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.head->list.next = node;
  }
}

/// Unlinks a word this thread owns. Pointers in the list may carry glibc's
/// PI flag in bit 0; it belongs to the pointer and is kept as it is.
inline void robust_unlink(robust_thread& t, std::atomic<std::uint32_t>& word) noexcept {
  if (!t.head) {
    return;
  }
  robust_list* node = robust_node(t, word);
  auto strip = [](robust_list* p) {
    return reinterpret_cast<robust_list*>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{1});
  };
  robust_list* end = &t.head->list;
  robust_list* prev = end;
  for (int guard = 0; guard < 4096; ++guard) {
    robust_list* next = strip(prev->next);
    if (next == node) {
      prev->next = node->next;
      std::atomic_signal_fence(std::memory_order_seq_cst);
      return;
    }
    if (next == end || next == nullptr) {
      return;  // not linked (for example, robust detection was off when it was locked)
    }
    prev = next;
  }
}

}  // namespace coproc::detail
