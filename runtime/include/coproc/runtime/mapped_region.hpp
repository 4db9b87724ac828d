#pragma once
/// A shared mapping of an anonymous memory file (memfd): never a name in /dev/shm.

#include <cstddef>
#include <span>
#include <utility>

#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

/// Owns a MAP_SHARED mapping of a memfd. The mapping survives fork(), so a
/// region created before forking is shared with the child; the fd (close-on-
/// exec) can also be handed to another process and mapped there.
/// Thread safety: distinct objects: safe; shared objects: unsafe.
class mapped_region {
 public:
  mapped_region() noexcept = default;

  /// Creates a memfd of `size` bytes (sparse: pages are allocated on first
  /// touch) and maps it read-write. Throws std::system_error naming the call.
  static mapped_region create(std::size_t size, const char* debug_name = "coproc");

  /// Maps an existing memfd (for example one received from another process).
  static mapped_region map(unique_fd fd, std::size_t size);

  mapped_region(mapped_region&& other) noexcept
      : fd_(std::move(other.fd_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  mapped_region& operator=(mapped_region&& other) noexcept;
  mapped_region(const mapped_region&) = delete;
  mapped_region& operator=(const mapped_region&) = delete;
  ~mapped_region() { reset(); }

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  int fd() const noexcept { return fd_.get(); }
  std::span<std::byte> bytes() const noexcept { return {data_, size_}; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  /// Returns the pages of [offset, offset+len) to the kernel (the memfd hole
  /// is punched, so the memory is freed for every process mapping it).
  void discard(std::size_t offset, std::size_t len) noexcept;

  void reset() noexcept;

 private:
  mapped_region(unique_fd fd, std::byte* data, std::size_t size) noexcept
      : fd_(std::move(fd)), data_(data), size_(size) {}

  unique_fd fd_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace coproc
