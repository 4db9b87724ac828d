#pragma once
// The bytes a connection has received and not yet consumed.

#include <cstddef>

namespace coproc::detail {

/// A byte buffer that grows without copying what it holds once it is large.
/// A message of many megabytes arrives a pipe buffer at a time, and its room
/// is added in steps as its bytes arrive (a frame header alone is not
/// trusted). Small capacities live on the heap; from `mapped_from` bytes on,
/// the buffer is its own anonymous mapping, advised for transparent huge
/// pages, and grows with mremap, which moves page-table entries instead of
/// copying the bytes and faulting in fresh pages for them again.
class receive_buffer {
 public:
  static constexpr std::size_t mapped_from = std::size_t{1} << 20;

  receive_buffer() = default;
  receive_buffer(const receive_buffer&) = delete;
  receive_buffer& operator=(const receive_buffer&) = delete;
  ~receive_buffer() { reset(); }

  std::byte* data() const noexcept { return data_; }
  std::size_t capacity() const noexcept { return capacity_; }

  /// Moves the `count` bytes at offset `from` to the front and makes the
  /// capacity at least `capacity` (from + count <= the current capacity).
  /// Each byte kept is moved at most once. Throws std::bad_alloc.
  void make_room(std::size_t capacity, std::size_t from, std::size_t count);

  /// Gives the memory back.
  void reset() noexcept;

  /// Test seam: called with the new capacity on every growth step (null:
  /// nothing), so a test can count the steps a large message takes.
  static inline void (*on_grow)(std::size_t capacity) noexcept = nullptr;

 private:
  std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
  bool mapped_ = false;
};

}  // namespace coproc::detail
