#include "coproc/executors/detail/zygote_reports.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/system_error.hpp"

namespace coproc::detail {

zygote_reports::zygote_reports(const asio::any_io_executor& ex, unique_fd read_end) : fd_(ex) {
  int flags = check_syscall(::fcntl(read_end.get(), F_GETFL), "fcntl");
  check_syscall(::fcntl(read_end.get(), F_SETFL, flags | O_NONBLOCK), "fcntl");
  fd_.assign(read_end.release());
}

bool zygote_reports::read_available(std::vector<zygote_report>& out) {
  if (!fd_.is_open()) {
    return false;
  }
  for (;;) {
    // Reports are written whole (40 bytes, below PIPE_BUF), but a read may
    // still end inside one: the rest waits in `partial_`.
    std::byte buffer[64 * sizeof(zygote_report)];
    std::memcpy(buffer, partial_, have_);
    ssize_t n = retry_eintr(
        [&] { return ::read(fd_.native_handle(), buffer + have_, sizeof buffer - have_); });
    if (n < 0) {
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    if (n == 0) {
      return false;
    }
    std::size_t total = have_ + static_cast<std::size_t>(n);
    std::size_t whole = total / sizeof(zygote_report);
    for (std::size_t i = 0; i < whole; ++i) {
      zygote_report r;
      std::memcpy(&r, buffer + i * sizeof r, sizeof r);
      out.push_back(r);
    }
    have_ = total - whole * sizeof(zygote_report);
    std::memcpy(partial_, buffer + whole * sizeof(zygote_report), have_);
  }
}

}  // namespace coproc::detail
