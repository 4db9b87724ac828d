#pragma once
// File descriptors handed to another process over a Unix socket (SCM_RIGHTS).
// Every place coproc passes fds (a manager's new connections, a worker's
// output pipes) goes through these two calls, so the control-message layout
// is written once.

#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <span>

#include "coproc/runtime/detail/fd_io.hpp"

namespace coproc::detail {

/// The most fds one message carries here.
inline constexpr std::size_t max_passed_fds = 4;

/// One message of `len` bytes at `data` with room for `fds` descriptors: the
/// msghdr both directions fill in.
struct fd_message {
  fd_message(const void* data, std::size_t len, std::size_t fds) noexcept
      : iov{const_cast<void*>(data), len} {
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = CMSG_SPACE(fds * sizeof(int));
  }
  fd_message(const fd_message&) = delete;
  fd_message& operator=(const fd_message&) = delete;

  iovec iov;
  alignas(cmsghdr) char control[CMSG_SPACE(max_passed_fds * sizeof(int))] = {};
  msghdr m{};
};

/// Sends `len` bytes of `data` with `fds` attached (at most max_passed_fds).
/// EINTR is retried; never raises SIGPIPE. Returns sendmsg's result.
inline ssize_t send_with_fds(int sock, const void* data, std::size_t len,
                             std::span<const int> fds) noexcept {
  const std::size_t n = std::min(fds.size(), max_passed_fds);
  fd_message msg(data, len, n);
  cmsghdr* c = CMSG_FIRSTHDR(&msg.m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(n * sizeof(int));
  std::memcpy(CMSG_DATA(c), fds.data(), n * sizeof(int));
  return retry_eintr([&] { return ::sendmsg(sock, &msg.m, MSG_NOSIGNAL); });
}

/// Receives up to `len` bytes into `data` and up to fds.size() (at most
/// max_passed_fds) descriptors, close-on-exec, into `fds`; `received` says
/// how many arrived (the kernel closes any beyond the room given). `flags`
/// are recvmsg's (MSG_DONTWAIT, ...). EINTR is retried. Returns recvmsg's
/// result.
inline ssize_t recv_with_fds(int sock, void* data, std::size_t len, std::span<int> fds,
                             std::size_t& received, int flags = 0) noexcept {
  received = 0;
  const std::size_t room = std::min(fds.size(), max_passed_fds);
  fd_message msg(data, len, room);
  ssize_t r = retry_eintr([&] { return ::recvmsg(sock, &msg.m, flags | MSG_CMSG_CLOEXEC); });
  if (r < 0) {
    return r;
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg.m); c != nullptr; c = CMSG_NXTHDR(&msg.m, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const std::size_t n = std::min((c->cmsg_len - CMSG_LEN(0)) / sizeof(int), room - received);
      std::memcpy(fds.data() + received, CMSG_DATA(c), n * sizeof(int));
      received += n;
    }
  }
  return r;
}

}  // namespace coproc::detail
