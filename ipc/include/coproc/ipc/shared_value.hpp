#pragma once
/// One value of a trivially copyable type in shared memory, guarded by a
/// process-shared lock or raw (Python's multiprocessing.Value).

#include <atomic>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "coproc/ipc/lock.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/recursive_lock.hpp"
#include "coproc/ipc/shared_memory.hpp"
#include "coproc/runtime/mapped_region.hpp"

namespace coproc {

/// Lock policy for shared_value / shared_array: no lock, raw access only
/// (Python's Value(..., lock=False)).
struct no_lock {};

namespace detail {

template <class T>
constexpr bool shareable_v = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> &&
                             !std::is_member_pointer_v<T> && !std::is_reference_v<T>;

/// Region layout: [lock state (64 bytes) unless no_lock][padding][elements].
template <class Lock>
constexpr std::size_t lock_bytes() {
  if constexpr (std::is_same_v<Lock, no_lock>) {
    return 0;
  } else {
    return Lock::shared_size;
  }
}

template <class T, class Lock>
struct shared_layout {
  static constexpr std::size_t lock_bytes = detail::lock_bytes<Lock>();
  static constexpr std::size_t offset = (lock_bytes + alignof(T) - 1) / alignof(T) * alignof(T);
};

// The lock member, in the region's first bytes (or nothing for no_lock).
template <class Lock>
struct lock_slot {
  explicit lock_slot(shared_memory& seg, shm_init init = shm_init::create) : lock(seg, 0, init) {}
  Lock lock;
};
template <>
struct lock_slot<no_lock> {
  explicit lock_slot(shared_memory&, shm_init = shm_init::create) {}
};

/// Raw element access: an atomic access when T fits a lock-free atomic (so
/// unlocked use is not a torn read), memcpy otherwise.
template <class T>
T raw_load(const T* p) noexcept {
  if constexpr (std::atomic_ref<T>::is_always_lock_free) {
    return std::atomic_ref<T>(*const_cast<T*>(p)).load(std::memory_order_relaxed);
  } else {
    T v;
    std::memcpy(static_cast<void*>(&v), p, sizeof(T));
    return v;
  }
}
template <class T>
void raw_store(T* p, const T& v) noexcept {
  if constexpr (std::atomic_ref<T>::is_always_lock_free) {
    std::atomic_ref<T>(*p).store(v, std::memory_order_relaxed);
  } else {
    std::memcpy(static_cast<void*>(p), &v, sizeof(T));
  }
}

}  // namespace detail

/// A `T` in its own memfd region, shared with children forked after its
/// creation. `Lock` is coproc::lock (default), coproc::recursive_lock, or
/// coproc::no_lock for raw access only.
///
/// load(), store() and update() take the lock; get_obj() is the raw object
/// for use under get_lock() (or as you see fit with no_lock). With no_lock,
/// load() and store() are single relaxed atomic accesses when T fits a
/// lock-free atomic, plain copies otherwise (then racy: synchronise yourself).
/// Does not move or copy.
/// Thread safety: load/store/update: safe from any thread or process.
template <class T, class Lock = coproc::lock>
class shared_value {
  static_assert(detail::shareable_v<T>,
                "coproc::shared_value<T>: T must be trivially copyable and hold no pointer "
                "(it is copied byte for byte into memory other processes map at other addresses)");
  static_assert(std::is_same_v<Lock, coproc::lock> || std::is_same_v<Lock, recursive_lock> ||
                    std::is_same_v<Lock, no_lock>,
                "coproc::shared_value<T, Lock>: Lock is coproc::lock, coproc::recursive_lock or "
                "coproc::no_lock");
  using layout = detail::shared_layout<T, Lock>;

 public:
  using value_type = T;

  /// Holds `initial`. Throws std::system_error naming the failing call.
  explicit shared_value(const T& initial = T{})
      : seg_(layout::offset + sizeof(T)),
        lock_(seg_),
        value_(reinterpret_cast<T*>(seg_.data() + layout::offset)) {
    std::memcpy(static_cast<void*>(value_), &initial, sizeof(T));
  }

  shared_value(const shared_value&) = delete;
  shared_value& operator=(const shared_value&) = delete;

  /// A copy of the value (under the lock unless no_lock).
  T load() const {
    if constexpr (has_lock) {
      std::lock_guard g(lock_.lock);
      return *value_;
    } else {
      return detail::raw_load(value_);
    }
  }

  /// Replaces the value (under the lock unless no_lock).
  void store(const T& v) {
    if constexpr (has_lock) {
      std::lock_guard g(lock_.lock);
      *value_ = v;
    } else {
      detail::raw_store(value_, v);
    }
  }

  /// Runs `f(T&)` under the lock and returns its result: the read-modify-write
  /// that `v.value += 1` is not in Python.
  template <class F>
  requires(!std::is_same_v<Lock, no_lock>) decltype(auto) update(F&& f) {
    std::lock_guard g(lock_.lock);
    return std::forward<F>(f)(*value_);
  }

  /// The lock guarding the value (Python's get_lock()).
  Lock& get_lock() const noexcept requires(!std::is_same_v<Lock, no_lock>) { return lock_.lock; }

  /// The raw shared object (Python's get_obj()): take get_lock() around use.
  T& get_obj() const noexcept { return *value_; }

  /// The memfd holding the value (close-on-exec).
  int fd() const noexcept { return seg_.fd(); }

 private:
  static constexpr bool has_lock = !std::is_same_v<Lock, no_lock>;
  shared_memory seg_;
  mutable detail::lock_slot<Lock> lock_;
  T* value_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <class T, class Lock>
inline constexpr bool is_process_shared_v<shared_value<T, Lock>> = true;

}  // namespace coproc
