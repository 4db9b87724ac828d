#pragma once
/// Throwing helpers for setup calls: the message names the failing system call.

#include <cerrno>
#include <system_error>

namespace coproc::detail {

[[noreturn]] inline void throw_errno(const char* syscall, int err = errno) {
  throw std::system_error(err, std::system_category(), syscall);
}

/// Returns `rc` when it is not negative; throws naming `syscall` otherwise.
template <class T>
T check_syscall(T rc, const char* syscall) {
  if (rc < 0) {
    throw_errno(syscall);
  }
  return rc;
}

}  // namespace coproc::detail
