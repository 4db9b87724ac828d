#pragma once
/// A move-only owner of one file descriptor (-1 when empty).

#include <unistd.h>

#include <utility>

namespace coproc {

/// Owns a file descriptor and closes it on destruction.
/// Thread safety: distinct objects: safe; shared objects: unsafe.
class unique_fd {
 public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

  /// Gives up ownership without closing.
  int release() noexcept { return std::exchange(fd_, -1); }

  /// Closes the current descriptor (if any) and owns `fd` instead.
  void reset(int fd = -1) noexcept {
    int old = std::exchange(fd_, fd);
    if (old >= 0) {
      ::close(old);  // EINTR still closes on Linux: never retry
    }
  }

 private:
  int fd_ = -1;
};

}  // namespace coproc
