#pragma once
/// A handle to a contiguous array in shared memory that crosses a process
/// boundary as a handle: passed to or returned from a task, no element is copied.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <ranges>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "coproc/ipc/detail/segment.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc {

template <class T>
class shared_buffer;

namespace detail {
// Copying a handle shares; only other ranges are copied element by element.
template <class R>
inline constexpr bool is_shared_buffer_v = false;
template <class U>
inline constexpr bool is_shared_buffer_v<shared_buffer<U>> = true;
}  // namespace detail

/// `size()` elements of `T` in an anonymous memfd segment (never a name in
/// /dev/shm). Copying the handle shares the memory; the memory lives while
/// any handle in any process, or any task in flight, refers to it.
///
/// It is codable: as an argument of `submit`, an item of `map`, an argument
/// of `process` or a value in a `queue`, only the handle crosses (about 40
/// bytes); the receiver maps the segment once (a worker keeps a few recent
/// mappings: see docs/ARCHITECTURE.md, "Shared buffers") and sees the same
/// elements. A task may create one and return it.
///
/// `shared_buffer<const T>` is the read-only form (a `shared_buffer<T>`
/// converts to it): a process that receives it maps the segment PROT_READ,
/// so a write through a cast faults instead of reaching other processes.
///
/// Memory ordering: what the parent wrote before `submit` is visible to the
/// task; what the task wrote is visible to the parent once the task's
/// completion is delivered (the task and result rings are release/acquire).
/// Writes by two processes at the same time (the parent while the task runs,
/// or two tasks) to the same elements are a data race, as between threads:
/// give each task its own range, or synchronise with a coproc::lock or
/// atomics.
///
/// A handle put into a queue or pipe between arbitrary processes is reopened
/// by the receiver through /proc/<sender>/fd/<n>: the sender must still hold
/// the buffer when the receiver decodes it, else the decode throws
/// std::system_error(coproc::errc::segment_unavailable). Between a pool and
/// its workers the pool keeps it alive itself.
///
/// Each segment holds one fd in every process that maps it (a peer reopens
/// it through that fd): thousands of live buffers need RLIMIT_NOFILE raised.
///
/// Thread safety: distinct objects: safe; shared objects: unsafe (the
/// elements themselves are raw memory).
template <class T>
class shared_buffer {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<std::remove_cv_t<T>> &&
                    !std::is_volatile_v<T>,
                "coproc::shared_buffer<T>: T must be trivially copyable and not a pointer (its "
                "bytes are mapped by other processes at other addresses)");
  static_assert(alignof(T) <= 4096, "coproc::shared_buffer<T>: T's alignment exceeds a page");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using iterator = T*;

  /// An empty handle (no segment, size() == 0).
  shared_buffer() noexcept = default;

  /// `n` zero-filled elements (none for n == 0). Throws std::system_error
  /// naming the failing call (memfd_create, ftruncate, mmap).
  explicit shared_buffer(std::size_t n) : seg_(make(n)), size_(n) {}

  /// A copy of `values`' elements.
  template <std::ranges::input_range R>
  requires std::convertible_to<std::ranges::range_reference_t<R>, value_type> &&
      (!detail::is_shared_buffer_v<std::remove_cvref_t<R>>)explicit shared_buffer(R&& values) {
    if constexpr (std::ranges::sized_range<R>) {
      size_ = static_cast<std::size_t>(std::ranges::size(values));
      seg_ = make(size_);
      std::ranges::copy(values, writable_data());
    } else {
      std::vector<value_type> tmp(std::ranges::begin(values), std::ranges::end(values));
      size_ = tmp.size();
      seg_ = make(size_);
      std::ranges::copy(tmp, writable_data());
    }
  }

  shared_buffer(std::initializer_list<value_type> values)
      : shared_buffer(std::span<const value_type>(values.begin(), values.size())) {}

  /// The read-only view of a writable buffer (the same memory).
  template <class U>
  requires std::is_same_v<const U, T> &&
      (!std::is_const_v<U>)shared_buffer(const shared_buffer<U>& other) noexcept
      : seg_(other.seg_), size_(other.size_) {}

  std::size_t size() const noexcept { return size_; }
  std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  T* data() const noexcept { return seg_ ? reinterpret_cast<T*>(seg_->data()) : nullptr; }
  std::span<T> span() const noexcept { return {data(), size_}; }
  T* begin() const noexcept { return data(); }
  T* end() const noexcept { return data() + size_; }
  /// Element `i`, unchecked.
  T& operator[](std::size_t i) const noexcept { return data()[i]; }
  /// Two handles to the same segment.
  friend bool operator==(const shared_buffer& a, const shared_buffer& b) noexcept {
    return a.seg_ == b.seg_;
  }

  /// cereal's save/load, through which the codec writes and reads the handle.
  template <class Archive>
  void save(Archive& ar) const {
    detail::save_segment(ar, seg_);
  }
  template <class Archive>
  void load(Archive& ar) {
    auto seg = detail::load_segment(ar, !std::is_const_v<T>);
    if (seg && seg->bytes() % sizeof(T) != 0) {
      throw std::system_error(coproc::errc::frame_corrupt,
                              "shared_buffer handle: size is not a whole number of elements");
    }
    size_ = seg ? seg->bytes() / sizeof(T) : 0;
    seg_ = std::move(seg);
  }

 private:
  template <class U>
  friend class shared_buffer;

  static std::shared_ptr<detail::segment> make(std::size_t n) {
    if (n == 0) {
      return nullptr;
    }
    if (n > SIZE_MAX / sizeof(T)) {
      throw std::length_error("coproc::shared_buffer: size too large");
    }
    return detail::create_segment(n * sizeof(T), "coproc-buffer");
  }
  value_type* writable_data() const noexcept {
    return seg_ ? reinterpret_cast<value_type*>(seg_->data()) : nullptr;
  }

  std::shared_ptr<detail::segment> seg_;
  std::size_t size_ = 0;
};

}  // namespace coproc
