#pragma once
// Shared machinery of pipe_reader and pipe_writer: the fd owner bound to a
// uring_service, and the read and write operations (READ/READV and
// WRITE/WRITEV on the ring; preadv2/pwritev2 with RWF_NOWAIT on epoll, so the
// fd itself stays blocking for any other process that shares it).

#include <poll.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <asio/buffer.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <cerrno>
#include <cstddef>
#include <system_error>
#include <tuple>
#include <utility>

#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/io_handler_op.hpp"
#include "coproc/runtime/detail/nosigpipe.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc::detail {

/// Maps a negative CQE result to an error code (-ECANCELED, and -EINTR of a
/// cancelled blocking op, become operation_aborted).
inline std::error_code uring_error(int res, bool cancel_requested) noexcept {
  if (res == -ECANCELED || (cancel_requested && res == -EINTR)) {
    return asio::error::operation_aborted;
  }
  return {-res, asio::error::get_system_category()};
}

// One read of a pipe into up to 16 buffers. (Writes are pipe_write_op's,
// below: they must also never raise SIGPIPE.)
struct pipe_read_impl {
  static constexpr std::size_t max_iov = 16;
  static constexpr std::size_t max_len = 0x7ffff000;  // the kernel's MAX_RW_COUNT

  template <class Buffers>
  pipe_read_impl(int fd_in, const Buffers& buffers) : fd(fd_in) {
    auto it = asio::buffer_sequence_begin(buffers);
    auto end = asio::buffer_sequence_end(buffers);
    for (; it != end && count < max_iov; ++it) {
      auto b = *it;
      std::size_t len = std::min<std::size_t>(b.size(), max_len - total);
      if (len == 0) {
        continue;
      }
      iov[count].iov_base = const_cast<void*>(static_cast<const void*>(b.data()));
      iov[count].iov_len = len;
      ++count;
      total += len;
    }
  }

  io_uring_sqe prepare() noexcept {
    io_uring_sqe sqe{};
    constexpr std::uint64_t current_position = ~std::uint64_t{0};  // pipes have no offset
    if (count <= 1) {
      void* base = count == 1 ? iov[0].iov_base : nullptr;
      io_uring_prep_read(&sqe, fd, base, static_cast<unsigned>(total), current_position);
    } else {
      io_uring_prep_readv(&sqe, fd, iov.data(), count, current_position);
    }
    return sqe;
  }

  reactor_plan plan() const { return reactor_plan::readable(fd); }

  int attempt() noexcept {
    if (total == 0) {
      return 0;
    }
    for (;;) {
      ssize_t r = retry_eintr(
          [&] { return ::preadv2(fd, iov.data(), static_cast<int>(count), -1, RWF_NOWAIT); });
      if (r >= 0) {
        return static_cast<int>(r);
      }
      if (errno != EOPNOTSUPP) {
        return -errno;
      }
      // A file without RWF_NOWAIT support: read only once poll says it will
      // not block.
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) == 0) {
        return -EAGAIN;
      }
      r = ::readv(fd, iov.data(), static_cast<int>(count));
      return r >= 0 ? static_cast<int>(r) : -errno;
    }
  }

  std::tuple<std::error_code, std::size_t> result(int res, bool cancel_requested) const noexcept {
    if (res < 0) {
      return {uring_error(res, cancel_requested), 0};
    }
    if (res == 0 && total > 0) {
      return {asio::error::eof, 0};
    }
    return {std::error_code(), static_cast<std::size_t>(res)};
  }

  int fd;
  std::array<iovec, max_iov> iov{};
  unsigned count = 0;
  std::size_t total = 0;
};

/// Readiness of a pipe's write end: IORING_OP_POLL_ADD (POLLOUT) on the ring,
/// the interest set on epoll. The write itself is then a non-blocking
/// pwritev2 without SIGPIPE on the loop thread: a ring WRITE to a pipe whose
/// reader is gone would queue SIGPIPE for whichever thread runs it.
struct poll_out_impl {
  explicit poll_out_impl(int fd_in) noexcept : fd(fd_in) {}
  io_uring_sqe prepare() noexcept {
    io_uring_sqe sqe{};
    io_uring_prep_poll_add(&sqe, fd, POLLOUT);
    return sqe;
  }
  reactor_plan plan() const { return reactor_plan::writable(fd); }
  /// poll(POLLOUT) without waiting: the revents, or -EAGAIN.
  int attempt() noexcept {
    pollfd p{fd, POLLOUT, 0};
    int n = ::poll(&p, 1, 0);
    if (n < 0) {
      return -errno;
    }
    return n == 0 ? -EAGAIN : p.revents;
  }
  std::tuple<std::error_code, std::size_t> result(int res, bool cancel_requested) const noexcept {
    if (res < 0) {
      return {uring_error(res, cancel_requested), 0};
    }
    return {std::error_code(), 0};
  }

  int fd;
};

/// pipe_writer's write: a non-blocking attempt (pwritev_nosigpipe with
/// RWF_NOWAIT), and while the pipe is full a wait for POLLOUT, then again.
/// Completes once at least one byte moved, or with the error (EPIPE for a
/// pipe without reader, never SIGPIPE); never inside the initiating call.
struct pipe_write_op {
  int fd;
  uring_service* service;
  asio::any_io_executor io_ex;
  std::array<iovec, 16> iov{};
  int count = 0;
  bool initiating = true;
  std::error_code ec{};
  std::size_t done = 0;

  template <class Self>
  void operator()(Self& self, std::error_code wait_ec = {}, std::size_t = 0) {
    if (!initiating && (wait_ec || done > 0 || ec)) {
      self.complete(wait_ec ? wait_ec : ec, done);
      return;
    }
    bool first = std::exchange(initiating, false);
    ssize_t n = count == 0 ? 0 : pwritev_nosigpipe(fd, iov.data(), count, RWF_NOWAIT);
    if (n >= 0 || errno != EAGAIN) {
      done = n > 0 ? static_cast<std::size_t>(n) : 0;
      ec = n < 0 ? std::error_code(errno, asio::error::get_system_category()) : std::error_code();
      if (n == 0 && count > 0 && !ec) {
        ec = asio::error::would_block;  // cannot happen on a pipe; never loop on it
      }
      if (first) {
        initiating = false;
        // Completed at once, but never inside the initiating function.
        asio::post(io_ex, std::move(self));
        return;
      }
      self.complete(ec, done);
      return;
    }
    launch_io_op<poll_out_impl>(*service, io_ex, std::move(self), fd);
  }
};

/// The fd of one pipe end and the ring that drives it.
class pipe_end {
 public:
  pipe_end(const asio::any_io_executor& ex, unique_fd fd)
      : ex_(ex), service_(&uring_service::of(ex)), fd_(std::move(fd)) {}
  pipe_end(pipe_end&&) noexcept = default;
  pipe_end& operator=(pipe_end&& other) noexcept {
    if (this != &other) {
      close();
      ex_ = std::move(other.ex_);
      service_ = other.service_;
      fd_ = std::move(other.fd_);
    }
    return *this;
  }
  ~pipe_end() { close(); }

  const asio::any_io_executor& executor() const noexcept { return ex_; }
  uring_service& service() const noexcept { return *service_; }
  int fd() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return static_cast<bool>(fd_); }

  void cancel() noexcept {
    if (fd_) {
      service_->cancel_fd(fd_.get());
    }
  }
  void close() noexcept {
    cancel();
    fd_.reset();
  }
  unique_fd release() noexcept {
    cancel();
    return std::move(fd_);
  }

  template <class Buffers, class Token>
  auto async_write(const Buffers& buffers, Token&& token) {
    pipe_write_op op{fd_.get(), service_, ex_};
    std::size_t total = 0;
    auto it = asio::buffer_sequence_begin(buffers);
    auto end = asio::buffer_sequence_end(buffers);
    for (; it != end && op.count < 16; ++it) {
      auto b = *it;
      std::size_t len = std::min<std::size_t>(b.size(), 0x7ffff000 - total);
      if (len == 0) {
        continue;
      }
      op.iov[static_cast<std::size_t>(op.count)] = {const_cast<void*>(b.data()), len};
      ++op.count;
      total += len;
    }
    return asio::async_compose<Token, void(std::error_code, std::size_t)>(std::move(op), token,
                                                                          ex_);
  }

  template <class Buffers, class Token>
  auto async_read(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, std::size_t)>(
        [](auto&& handler, pipe_end* self, const Buffers& b) {
          launch_io_op<pipe_read_impl>(*self->service_, self->ex_,
                                       std::forward<decltype(handler)>(handler), self->fd_.get(),
                                       b);
        },
        token, this, buffers);
  }

 private:
  asio::any_io_executor ex_;
  uring_service* service_;
  unique_fd fd_;
};

}  // namespace coproc::detail
