#pragma once
/// A fixed-size array of a trivially copyable type in shared memory, guarded
/// by a process-shared lock or raw (Python's multiprocessing.Array).

#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/shared_value.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc {

/// `size` elements of `T` (zero-initialised bytes) in their own memfd
/// region, shared with children forked after creation. `Lock` as for
/// shared_value: coproc::lock (default), coproc::recursive_lock, coproc::no_lock.
///
/// load(i)/store(i, v)/snapshot()/assign() take the lock; operator[], data()
/// and span() are raw access for use under get_lock().
/// Copies share the array and its lock. It is codable the way
/// coproc::shared_buffer is: passed to or returned from a task, only a handle
/// crosses and the receiver attaches to the same elements and lock.
/// Thread safety: locked members: safe from any thread or process.
template <class T, class Lock = coproc::lock>
class shared_array {
  static_assert(detail::shareable_v<T>,
                "coproc::shared_array<T>: T must be trivially copyable and hold no pointer "
                "(it is copied byte for byte into memory other processes map at other addresses)");
  static_assert(std::is_same_v<Lock, coproc::lock> || std::is_same_v<Lock, recursive_lock> ||
                    std::is_same_v<Lock, no_lock>,
                "coproc::shared_array<T, Lock>: Lock is coproc::lock, coproc::recursive_lock or "
                "coproc::no_lock");
  using layout = detail::shared_layout<T, Lock>;

 public:
  using value_type = T;

  /// An empty handle (size() == 0) to assign to, as a task's result type
  /// needs; load() and store() throw std::out_of_range on it, and the other
  /// members need a non-empty array.
  shared_array() noexcept = default;

  /// `size` (> 0) zero-filled elements. Throws std::invalid_argument for 0,
  /// std::system_error naming a failing call.
  explicit shared_array(std::size_t size)
      : s_(std::make_shared<state>(shared_memory(layout::offset + sizeof(T) * check(size)),
                                   shm_init::create)),
        data_(reinterpret_cast<T*>(s_->seg.data() + layout::offset)),
        size_(size) {}

  /// A copy of `init`'s elements.
  explicit shared_array(std::span<const T> init) : shared_array(init.size()) {
    std::memcpy(static_cast<void*>(data_), init.data(), init.size_bytes());
  }

  std::size_t size() const noexcept { return size_; }

  /// Element `i` (under the lock unless no_lock). Throws std::out_of_range.
  T load(std::size_t i) const {
    check_index(i);
    if constexpr (has_lock) {
      std::lock_guard g(s_->lock.lock);
      return data_[i];
    } else {
      return detail::raw_load(data_ + i);
    }
  }

  /// Sets element `i` (under the lock unless no_lock). Throws std::out_of_range.
  void store(std::size_t i, const T& v) {
    check_index(i);
    if constexpr (has_lock) {
      std::lock_guard g(s_->lock.lock);
      data_[i] = v;
    } else {
      detail::raw_store(data_ + i, v);
    }
  }

  /// A consistent copy of every element (under the lock unless no_lock).
  std::vector<T> snapshot() const {
    if constexpr (has_lock) {
      std::lock_guard g(s_->lock.lock);
      return std::vector<T>(data_, data_ + size_);
    } else {
      return std::vector<T>(data_, data_ + size_);
    }
  }

  /// Runs `f(std::span<T>)` under the lock and returns its result.
  template <class F>
  requires(!std::is_same_v<Lock, no_lock>) decltype(auto) update(F&& f) {
    std::lock_guard g(s_->lock.lock);
    return std::forward<F>(f)(std::span<T>(data_, size_));
  }

  Lock& get_lock() const noexcept requires(!std::is_same_v<Lock, no_lock>) { return s_->lock.lock; }

  /// Raw access (no lock taken).
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* data() const noexcept { return data_; }
  std::span<T> span() const noexcept { return {data_, size_}; }

  /// The memfd holding the array (close-on-exec).
  int fd() const noexcept { return s_->seg.fd(); }

  /// cereal's save/load, through which the codec writes and reads the handle.
  template <class Archive>
  void save(Archive& ar) const {
    detail::save_segment(ar, s_->seg.seg_);
  }
  template <class Archive>
  void load(Archive& ar) {
    shared_memory seg(detail::load_segment(ar, true));
    // The size comes from the segment (checked against the file), never
    // from bytes a peer wrote.
    if (seg.size() < layout::offset + sizeof(T) || (seg.size() - layout::offset) % sizeof(T) != 0) {
      throw std::system_error(coproc::errc::frame_corrupt,
                              "shared_array handle: the segment has no whole array");
    }
    size_ = (seg.size() - layout::offset) / sizeof(T);
    s_ = std::make_shared<state>(std::move(seg), shm_init::attach);
    data_ = reinterpret_cast<T*>(s_->seg.data() + layout::offset);
  }

 private:
  static constexpr bool has_lock = !std::is_same_v<Lock, no_lock>;
  static std::size_t check(std::size_t n) {
    if (n == 0) {
      throw std::invalid_argument("coproc::shared_array: size must be at least 1");
    }
    return n;
  }
  void check_index(std::size_t i) const {
    if (i >= size_) {
      throw std::out_of_range("coproc::shared_array: index out of range");
    }
  }

  // The segment and the lock placed in it, shared by every copy.
  struct state {
    state(shared_memory s, shm_init init) : seg(std::move(s)), lock(seg, init) {}
    shared_memory seg;
    detail::lock_slot<Lock> lock;
  };

  std::shared_ptr<state> s_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <class T, class Lock>
inline constexpr bool is_process_shared_v<shared_array<T, Lock>> = true;

}  // namespace coproc
