#pragma once
// Block copies for the codec: building a contiguous container of trivially
// copyable elements from the bytes of a frame in one pass (one memmove when
// the bytes are aligned, an unaligned iterator otherwise), with large blocks
// advised for huge pages before their first touch.

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <span>

namespace coproc::detail {

/// Reads T values from possibly misaligned bytes, one memcpy each; lets a container be
/// built from a block in one pass without first value-initialising its elements.
template <class T>
class unaligned_iterator {
 public:
  using iterator_category = std::random_access_iterator_tag;
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = T;

  unaligned_iterator() = default;
  explicit unaligned_iterator(const std::byte* p) noexcept : p_(p) {}

  T operator*() const noexcept {
    std::array<std::byte, sizeof(T)> raw;
    std::memcpy(raw.data(), p_, sizeof(T));
    return std::bit_cast<T>(raw);
  }
  T operator[](difference_type i) const noexcept { return *(*this + i); }
  unaligned_iterator& operator++() noexcept {
    p_ += sizeof(T);
    return *this;
  }
  unaligned_iterator operator++(int) noexcept {
    auto old = *this;
    ++*this;
    return old;
  }
  unaligned_iterator& operator--() noexcept {
    p_ -= sizeof(T);
    return *this;
  }
  unaligned_iterator operator--(int) noexcept {
    auto old = *this;
    --*this;
    return old;
  }
  unaligned_iterator& operator+=(difference_type n) noexcept {
    p_ += n * static_cast<difference_type>(sizeof(T));
    return *this;
  }
  unaligned_iterator& operator-=(difference_type n) noexcept {
    p_ -= n * static_cast<difference_type>(sizeof(T));
    return *this;
  }
  friend unaligned_iterator operator+(unaligned_iterator it, difference_type n) noexcept {
    return it += n;
  }
  friend unaligned_iterator operator+(difference_type n, unaligned_iterator it) noexcept {
    return it += n;
  }
  friend unaligned_iterator operator-(unaligned_iterator it, difference_type n) noexcept {
    return it -= n;
  }
  friend difference_type operator-(unaligned_iterator a, unaligned_iterator b) noexcept {
    return (a.p_ - b.p_) / static_cast<difference_type>(sizeof(T));
  }
  friend bool operator==(unaligned_iterator a, unaligned_iterator b) noexcept {
    return a.p_ == b.p_;
  }
  friend auto operator<=>(unaligned_iterator a, unaligned_iterator b) noexcept {
    return a.p_ <=> b.p_;
  }

 private:
  const std::byte* p_ = nullptr;
};

/// Blocks from this size up are decoded into memory advised for huge pages.
inline constexpr std::size_t huge_block_bytes = std::size_t{4} << 20;

/// madvise(MADV_HUGEPAGE) over the 2 MiB-aligned interior of [p, p + n): a hint,
/// failures are ignored.
void advise_huge_pages(const void* p, std::size_t n) noexcept;

/// Builds a contiguous container of n block-copied elements from bytes: one memmove when
/// the bytes are aligned for E (the usual case), else one unaligned pass.
template <class Container, class E>
Container make_block(std::span<const std::byte> bytes, std::size_t n) {
  if (n == 0) {
    return Container();
  }
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(E) == 0) {
    // The frame's bytes were written by memcpy/read, which implicitly create objects of
    // implicit-lifetime types, so viewing them as E is sound; the library copies with memmove.
    const auto* first = reinterpret_cast<const E*>(bytes.data());
    if (n * sizeof(E) >= huge_block_bytes) {
      // A large block gets fresh pages: ask for transparent huge pages before
      // the first touch, so the copy takes 512x fewer page faults.
      Container c;
      c.reserve(n);
      advise_huge_pages(c.data(), n * sizeof(E));
      c.insert(c.end(), first, first + n);
      return c;
    }
    return Container(first, first + n);
  }
  unaligned_iterator<E> first(bytes.data());
  return Container(first, first + static_cast<std::ptrdiff_t>(n));
}

}  // namespace coproc::detail
