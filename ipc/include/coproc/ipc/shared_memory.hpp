#pragma once
/// A block of memory shared between processes: an anonymous memfd mapping,
/// never an entry in /dev/shm (Python's multiprocessing.shared_memory.SharedMemory).

#include <sys/stat.h>

#include <cstddef>
#include <cstring>
#include <span>
#include <stdexcept>
#include <utility>

#include "coproc/ipc/process_shared.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/mapped_region.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

/// How a sync primitive placed in a shared_memory segment treats its bytes:
/// `create` initialises them (once, in one process, before any use), `attach`
/// uses state that a peer created (for example after receiving the fd).
enum class shm_init { create, attach };

/// A segment of `size` zero-filled bytes shared with other processes.
///
/// It has no name: children forked after its creation inherit the mapping;
/// another process gets it through its fd (close-on-exec; send it over a
/// Unix socket or coproc::pipe) and `shared_memory::attach`. The memory is
/// freed when the last process unmaps it and the last fd is closed, so
/// nothing leaks when a process dies (unlike Python's unlink()).
/// Thread safety: distinct objects: safe; shared objects: unsafe (the bytes
/// themselves are raw memory: synchronise with a coproc::lock or atomics).
class shared_memory {
 public:
  /// Creates a segment of `size` bytes (> 0). Throws std::system_error
  /// naming the failing call (memfd_create, ftruncate, mmap).
  explicit shared_memory(std::size_t size) : region_(mapped_region::create(size, "coproc-shm")) {}

  /// Maps a segment received as `fd`; its size is the memfd's size.
  /// Throws std::system_error naming the failing call (fstat, mmap).
  static shared_memory attach(unique_fd fd) {
    struct stat st {};
    detail::check_syscall(::fstat(fd.get(), &st), "fstat");
    return shared_memory(mapped_region::map(std::move(fd), static_cast<std::size_t>(st.st_size)));
  }

  shared_memory(shared_memory&&) noexcept = default;
  shared_memory& operator=(shared_memory&&) noexcept = default;

  std::byte* data() const noexcept { return region_.data(); }
  std::size_t size() const noexcept { return region_.size(); }
  /// The memfd (owned by this object, close-on-exec); dup it to hand it on.
  int fd() const noexcept { return region_.fd(); }
  std::span<std::byte> bytes() const noexcept { return region_.bytes(); }

  /// The bytes at [offset, offset + len), checked against size().
  /// Throws std::out_of_range past the end.
  std::byte* at(std::size_t offset, std::size_t len) const {
    if (offset > size() || len > size() - offset) {
      throw std::out_of_range("coproc::shared_memory: range past the end of the segment");
    }
    return data() + offset;
  }

 private:
  explicit shared_memory(mapped_region r) noexcept : region_(std::move(r)) {}
  mapped_region region_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<shared_memory> = true;

}  // namespace coproc
