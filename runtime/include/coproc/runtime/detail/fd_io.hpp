#pragma once
// Blocking reads and writes that survive signals: a call interrupted by a
// signal (EINTR) is made again, and a short transfer continues where it
// stopped. One place for the loop that every child and pipe path needs.

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <type_traits>

namespace coproc::detail {

/// Calls `call()` again while it fails with EINTR; returns its last result.
/// For system calls that return a negative value with errno on failure.
template <class Call>
auto retry_eintr(Call call) noexcept(std::is_nothrow_invocable_v<Call>) {
  decltype(call()) r;
  do {
    r = call();
  } while (r < 0 && errno == EINTR);
  return r;
}

/// Calls `io(p, left)` until `size` bytes went through: EINTR retried, a
/// short transfer continued. False at 0 (end of stream) or an error.
template <class Byte, class Io>
bool transfer_full(Byte* p, std::size_t size, Io io) noexcept {
  while (size > 0) {
    ssize_t n = retry_eintr([&] { return io(p, size); });
    if (n <= 0) {
      return false;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

/// Reads exactly `size` bytes. False at end of stream (errno untouched) or on
/// an error (errno says which).
inline bool read_full(int fd, void* out, std::size_t size) noexcept {
  return transfer_full(static_cast<char*>(out), size,
                       [fd](char* p, std::size_t n) { return ::read(fd, p, n); });
}

/// Writes all `size` bytes. False on an error (errno says which). Raises
/// SIGPIPE as write(2) does: for a pipe whose reader may be gone while the
/// process has a SIGPIPE disposition to keep, use write_nosigpipe.
inline bool write_full(int fd, const void* data, std::size_t size) noexcept {
  return transfer_full(static_cast<const char*>(data), size,
                       [fd](const char* p, std::size_t n) { return ::write(fd, p, n); });
}

}  // namespace coproc::detail
