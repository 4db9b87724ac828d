#pragma once
/// A block of memory shared between processes: an anonymous memfd mapping,
/// never an entry in /dev/shm (Python's multiprocessing.shared_memory.SharedMemory).

#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <utility>

#include "coproc/ipc/detail/segment.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

template <class T, class Lock>
class shared_array;

/// How a sync primitive placed in a shared_memory segment treats its bytes:
/// `create` initialises them (once, in one process, before any use), `attach`
/// uses state that a peer created (for example after receiving the fd).
enum class shm_init { create, attach };

/// A segment of `size` zero-filled bytes shared with other processes.
///
/// It has no name: children forked after its creation inherit the mapping;
/// another process gets it through its fd (close-on-exec; send it over a
/// Unix socket or coproc::pipe) and `shared_memory::attach`, or as a task
/// argument, result or queue item: it is codable the way coproc::shared_buffer
/// is (only a handle crosses; see that class for lifetimes). Copies share the
/// segment. The memory is freed when the last process unmaps it and the last
/// fd is closed, so nothing leaks when a process dies (unlike Python's
/// unlink()).
/// Thread safety: distinct objects: safe; shared objects: unsafe (the bytes
/// themselves are raw memory: synchronise with a coproc::lock or atomics).
class shared_memory {
 public:
  /// Creates a segment of `size` bytes (> 0). Throws std::system_error
  /// naming the failing call (memfd_create, ftruncate, mmap).
  explicit shared_memory(std::size_t size) : seg_(detail::create_segment(size, "coproc-shm")) {}

  /// An empty handle (size() == 0, data() null) to assign to, as a task's
  /// result type needs.
  shared_memory() noexcept = default;

  /// Maps a segment received as `fd`; its size is the memfd's size.
  /// Throws std::system_error naming the failing call (fstat, mmap).
  static shared_memory attach(unique_fd fd) {
    return shared_memory(detail::map_segment_fd(std::move(fd)));
  }

  std::byte* data() const noexcept { return seg_ ? seg_->data() : nullptr; }
  std::size_t size() const noexcept { return seg_ ? seg_->bytes() : 0; }
  /// The memfd (owned by this object, close-on-exec); dup it to hand it on.
  int fd() const noexcept { return seg_ ? seg_->fd() : -1; }
  std::span<std::byte> bytes() const noexcept { return {data(), size()}; }

  /// The bytes at [offset, offset + len), checked against size().
  /// Throws std::out_of_range past the end.
  std::byte* at(std::size_t offset, std::size_t len) const {
    if (offset > size() || len > size() - offset) {
      throw std::out_of_range("coproc::shared_memory: range past the end of the segment");
    }
    return data() + offset;
  }

  /// cereal's save/load, through which the codec writes and reads the handle.
  template <class Archive>
  void save(Archive& ar) const {
    detail::save_segment(ar, seg_);
  }
  template <class Archive>
  void load(Archive& ar) {
    seg_ = detail::load_segment(ar, true);
  }

 private:
  template <class T, class Lock>
  friend class shared_array;
  explicit shared_memory(std::shared_ptr<detail::segment> s) noexcept : seg_(std::move(s)) {}
  std::shared_ptr<detail::segment> seg_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<shared_memory> = true;

}  // namespace coproc
