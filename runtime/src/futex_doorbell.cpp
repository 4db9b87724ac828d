#include "coproc/runtime/futex_doorbell.hpp"

#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>

#include "coproc/runtime/detail/system_error.hpp"

namespace coproc {

// Non-blocking: at the counter's limit (2^64 - 2 rings) a write fails with
// EAGAIN instead of blocking the waker; the eventfd stays readable, so no
// watcher misses that ring.
futex_doorbell::futex_doorbell()
    : fd_(detail::check_syscall(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd")) {
  struct stat st {};
  detail::check_syscall(::fstat(fd_.get(), &st), "fstat(eventfd)");
  dev_ = st.st_dev;
  ino_ = st.st_ino;
}

void futex_doorbell::write_once() const noexcept {
  // Every eventfd shares one anonymous inode; other files behind a reused fd
  // number (a child that closed every fd) do not, and are left alone.
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_) {
    return;
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd_.get(), &one, sizeof one);
}

}  // namespace coproc
