#pragma once
// The codec's output: bytes appended to a caller-provided buffer, or only
// counted, so that one pass of the same code sizes a frame and another fills it.

#include <cstddef>
#include <cstring>
#include <span>

namespace coproc::detail {

[[noreturn]] void throw_buffer_too_small();

/// Appends bytes to a caller-provided buffer, or only counts them (for sizing).
class writer {
 public:
  /// A counting writer: nothing is stored.
  writer() noexcept = default;
  explicit writer(std::span<std::byte> out) noexcept
      : pos_(out.data()), begin_(out.data()), end_(out.data() + out.size()), counting_(false) {}

  void write(const void* src, std::size_t n) {
    if (counting_) {
      count_ += n;
      return;
    }
    if (n > static_cast<std::size_t>(end_ - pos_)) {
      throw_buffer_too_small();
    }
    if (n != 0) {
      std::memcpy(pos_, src, n);
      pos_ += n;
    }
  }

  template <class T>
  void write_raw(const T& value) {
    write(&value, sizeof(T));
  }

  /// Skips n bytes to be filled in later; null when counting.
  std::byte* skip(std::size_t n) {
    if (counting_) {
      count_ += n;
      return nullptr;
    }
    if (n > static_cast<std::size_t>(end_ - pos_)) {
      throw_buffer_too_small();
    }
    std::byte* at = pos_;
    pos_ += n;
    return at;
  }

  std::size_t written() const noexcept {
    return counting_ ? count_ : static_cast<std::size_t>(pos_ - begin_);
  }

 private:
  std::byte* pos_ = nullptr;
  std::byte* begin_ = nullptr;
  std::byte* end_ = nullptr;
  std::size_t count_ = 0;
  bool counting_ = true;
};

}  // namespace coproc::detail
