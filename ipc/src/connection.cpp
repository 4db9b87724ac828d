#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <asio/error.hpp>
#include <cerrno>
#include <cstring>

#include "coproc/ipc/detail/peer_spin.hpp"
#include "coproc/ipc/pipe.hpp"
#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/nosigpipe.hpp"
#include "coproc/runtime/detail/system_error.hpp"

namespace coproc {
namespace detail {
namespace {

constexpr std::size_t min_read_space = std::size_t{64} << 10;
// A buffer grown for a big frame is given back once empty: a connection that
// once carried 64 MiB must not pin 64 MiB for the rest of its life.
constexpr std::size_t keep_capacity = std::size_t{1} << 20;
// A frame header is only the peer's word: space for a frame is reserved up
// to this much beyond what arrived, then doubles as its bytes arrive, so 16
// bytes claiming max_message_size do not allocate gigabytes (fuzz finding,
// fuzz/manager_request_fuzz; test: tests/reliability/frame_reserve_test.cpp).
constexpr std::size_t trust_ahead = std::size_t{1} << 20;

struct header {
  std::uint32_t magic;
  std::int32_t cpu;
  std::uint64_t size;
};
static_assert(sizeof(header) == frame_header_size);

bool is_end_of_stream(int err) noexcept {
  return err == EPIPE || err == ECONNRESET || err == ENOTCONN || err == ESHUTDOWN;
}

// One write to a pipe (RWF_NOWAIT when `nowait`: non-blocking for this call
// only, the fd stays blocking for the peer that shares it) that never raises
// SIGPIPE (runtime/detail/nosigpipe.hpp: two or three extra system calls,
// measured ~0.4 us per write here; still far below a socket's extra cost).
ssize_t pipe_write(int fd, const std::byte* p, std::size_t n, bool nowait) noexcept {
  iovec iov{const_cast<std::byte*>(p), n};
  return pwritev_nosigpipe(fd, &iov, 1, nowait ? RWF_NOWAIT : 0);
}

}  // namespace

frame_buffer make_frame(std::size_t payload) {
  frame_buffer f;
  f.size = frame_header_size + payload;
  f.data = std::make_unique_for_overwrite<std::byte[]>(f.size);
  if (f.size >= huge_block_bytes) {
    advise_huge_pages(f.data.get(), f.size);  // before the encoder's first touch
  }
  header h{frame_magic, current_cpu(), payload};
  std::memcpy(f.data.get(), &h, sizeof h);
  return f;
}

int send_impl::attempt() noexcept {
  ssize_t r = retry_eintr([&] { return ::send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL); });
  if (r >= 0) {
    return static_cast<int>(r);
  }
  return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

io_uring_sqe send_impl::prepare() noexcept {
  io_uring_sqe sqe{};
  io_uring_prep_send(&sqe, fd, data, len, MSG_NOSIGNAL);
  return sqe;
}

connection_core::connection_core(const asio::any_io_executor& ex, unique_fd fd,
                                 const connection_options& o)
    : ex_(ex), fd_(std::move(fd)), options_(o) {}

connection_core::connection_core(const asio::any_io_executor& ex, unique_fd read_end,
                                 unique_fd write_end, const connection_options& o)
    : ex_(ex), fd_(std::move(read_end)), wfd_(std::move(write_end)), socket_(false), options_(o) {}

uring_service& connection_core::service() {
  if (service_ == nullptr) {
    service_ = &uring_service::of(ex_);
  }
  ring_pid_ = ::getpid();
  return *service_;
}

void connection_core::cancel() noexcept {
  if (service_ != nullptr && ring_pid_ == ::getpid()) {
    if (fd_) {
      service_->cancel_fd(fd_.get());
    }
    if (wfd_) {
      service_->cancel_fd(wfd_.get());
    }
  }
}

void connection_core::close() noexcept {
  cancel();
  fd_.reset();
  wfd_.reset();
}

unique_fd connection_core::release() noexcept {
  cancel();
  if (socket_) {
    return std::move(fd_);
  }
  fd_.reset();
  return std::move(wfd_);
}

void connection_core::reserve_frame(std::size_t total) {
  const std::size_t have = end_ - begin_;
  buf_.make_room(std::max(total, min_read_space), begin_, have);
  begin_ = 0;
  end_ = have;
}

connection_core::parse_result connection_core::parse(std::span<const std::byte>& payload,
                                                     std::error_code& ec) {
  std::size_t have = end_ - begin_;
  if (have < frame_header_size) {
    return parse_result::need_more;
  }
  header h;
  std::memcpy(&h, buf_.data() + begin_, sizeof h);
  if (h.magic != frame_magic) {
    ec = errc::frame_corrupt;
    return parse_result::error;
  }
  if (h.size > options_.max_message_size) {
    ec = errc::frame_too_large;
    return parse_result::error;
  }
  peer_cpu_ = h.cpu;
  std::size_t total = frame_header_size + static_cast<std::size_t>(h.size);
  if (have < total) {
    return parse_result::need_more;
  }
  payload = {buf_.data() + begin_ + frame_header_size, static_cast<std::size_t>(h.size)};
  frame_total_ = total;
  return parse_result::ready;
}

void connection_core::consume() noexcept {
  begin_ += frame_total_;
  frame_total_ = 0;
  if (begin_ == end_) {
    begin_ = end_ = 0;
    if (buf_.capacity() > keep_capacity) {
      buf_.reset();
    }
  }
}

std::span<std::byte> connection_core::read_space() {
  std::size_t have = end_ - begin_;
  std::size_t want = min_read_space;  // bytes from begin_ the buffer should hold
  if (have >= frame_header_size) {
    header h;
    std::memcpy(&h, buf_.data() + begin_, sizeof h);
    // parse() already checked magic and size against the maximum. Room is
    // reserved up to trust_ahead beyond what arrived (at least doubling), so
    // a header alone never makes us allocate its claimed size.
    const std::size_t total = frame_header_size + static_cast<std::size_t>(h.size);
    want = std::max(want, std::min(total, have + std::max(have, trust_ahead)));
  }
  // Grow or compact only when the free tail cannot take a useful read: growing
  // whenever `want` moved (it moves with every read) copied the whole frame on
  // every read, quadratic in its size (64 MiB took 7 s; bench_pipe pipe_64MiB_ms).
  const std::size_t need = want > have ? want - have : 1;
  if (buf_.data() == nullptr || buf_.capacity() - end_ < std::min<std::size_t>(need, 4096)) {
    reserve_frame(std::max(want, have + 1));
  }
  return {buf_.data() + end_, buf_.capacity() - end_};
}

std::error_code connection_core::map_io_error(std::error_code ec) noexcept {
  if (ec == asio::error::eof || ec == std::errc::broken_pipe || ec == std::errc::connection_reset ||
      ec == std::errc::not_connected) {
    return errc::end_of_stream;
  }
  return ec;
}

std::error_code connection_core::try_read(std::size_t& got) {
  got = 0;
  if (!fd_) {
    return asio::error::bad_descriptor;
  }
  std::span<std::byte> space = read_space();
  ssize_t r = retry_eintr([&] {
    if (socket_) {
      return ::recv(fd_.get(), space.data(), space.size(), MSG_DONTWAIT);
    }
    // RWF_NOWAIT: non-blocking for this call only; the fd stays blocking
    // for the ring and for the peer that shares the open file after fork.
    iovec iov{space.data(), space.size()};
    return ::preadv2(fd_.get(), &iov, 1, -1, RWF_NOWAIT);
  });
  if (r > 0) {
    got = static_cast<std::size_t>(r);
    end_ += got;
    return {};
  }
  if (r == 0) {
    inbound_ended_ = true;
    return errc::end_of_stream;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return asio::error::would_block;
  }
  return is_end_of_stream(errno) ? std::error_code(errc::end_of_stream)
                                 : std::error_code(errno, std::system_category());
}

std::error_code connection_core::read_blocking() {
  if (!fd_) {
    return asio::error::bad_descriptor;
  }
  bool may_spin = options_.spin.count() > 0 && peer_on_other_cpu(peer_cpu_);
  if (may_spin && spin_skip_ > 0) {
    --spin_skip_;
    may_spin = false;
  }
  if (may_spin) {
    auto deadline = std::chrono::steady_clock::now() + options_.spin;
    std::size_t got = 0;
    do {
      std::error_code ec = try_read(got);
      if (ec != asio::error::would_block) {
        spin_failures_ = 0;
        return ec;
      }
    } while (std::chrono::steady_clock::now() < deadline);
    // The peer answers slower than a wake-up costs: stop spinning for a while.
    spin_failures_ = std::min(spin_failures_ + 1, 6u);
    spin_skip_ = 1u << spin_failures_;
  }
  std::span<std::byte> space = read_space();
  ssize_t r = retry_eintr([&] { return ::read(fd_.get(), space.data(), space.size()); });
  if (r > 0) {
    end_ += static_cast<std::size_t>(r);
    return {};
  }
  if (r == 0) {
    inbound_ended_ = true;
    return errc::end_of_stream;
  }
  return is_end_of_stream(errno) ? std::error_code(errc::end_of_stream)
                                 : std::error_code(errno, std::system_category());
}

std::error_code connection_core::write_blocking(std::span<const std::byte> bytes) {
  if (!fd_) {
    return asio::error::bad_descriptor;
  }
  if (write_error_) {
    return write_error_;
  }
  if (inbound_ended_ && !socket_) {
    return errc::end_of_stream;  // see mark_inbound_ended()
  }
  while (!bytes.empty()) {
    ssize_t r = retry_eintr([&] {
      return socket_ ? ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL)
                     : pipe_write(wfd_.get(), bytes.data(), bytes.size(), false);
    });
    if (r < 0) {
      return is_end_of_stream(errno) ? std::error_code(errc::end_of_stream)
                                     : std::error_code(errno, std::system_category());
    }
    bytes = bytes.subspan(static_cast<std::size_t>(r));
  }
  return {};
}

std::error_code connection_core::try_write(std::span<const std::byte> bytes, std::size_t& sent) {
  sent = 0;
  if (!fd_) {
    return asio::error::bad_descriptor;
  }
  if (write_error_) {
    return write_error_;
  }
  if (inbound_ended_ && !socket_) {
    return errc::end_of_stream;  // see mark_inbound_ended()
  }
  ssize_t r = retry_eintr([&] {
    return socket_ ? ::send(fd_.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL)
                   : pipe_write(wfd_.get(), bytes.data(), bytes.size(), true);
  });
  if (r >= 0) {
    sent = static_cast<std::size_t>(r);
    return {};
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return asio::error::would_block;
  }
  return is_end_of_stream(errno) ? std::error_code(errc::end_of_stream)
                                 : std::error_code(errno, std::system_category());
}

void connection_core::break_writes() noexcept {
  write_error_ = errc::end_of_stream;
  if (socket_ && fd_) {
    ::shutdown(fd_.get(), SHUT_WR);
  } else if (!socket_) {
    if (service_ != nullptr && ring_pid_ == ::getpid() && wfd_) {
      service_->cancel_fd(wfd_.get());
    }
    wfd_.reset();  // the peer's read sees the end of the stream
  }
}

void connection_core::check_send_size(std::size_t payload) const {
  if (payload > options_.max_message_size) {
    throw std::system_error(errc::frame_too_large, "coproc::connection: message to send");
  }
}

}  // namespace detail

connection::connection(const executor_type& ex, unique_fd fd, connection_options options)
    : core_(std::make_shared<detail::connection_core>(ex, std::move(fd), options)) {}

connection::connection(const executor_type& ex, unique_fd read_end, unique_fd write_end,
                       connection_options options)
    : core_(std::make_shared<detail::connection_core>(ex, std::move(read_end), std::move(write_end),
                                                      options)) {}

connection::~connection() {
  if (core_) {
    core_->close();
  }
}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    if (core_) {
      core_->close();
    }
    core_ = std::move(other.core_);
  }
  return *this;
}

std::pair<connection, connection> make_connection_pair(const asio::any_io_executor& ex,
                                                       connection_options options) {
  // Two pipes, not a socketpair: a pipe round trip costs about half of a
  // socket's on this kernel (docs/ARCHITECTURE.md, "Connections").
  int ab[2];
  int ba[2];
  detail::check_syscall(::pipe2(ab, O_CLOEXEC), "pipe2");
  unique_fd ab_read(ab[0]);
  unique_fd ab_write(ab[1]);
  detail::check_syscall(::pipe2(ba, O_CLOEXEC), "pipe2");
  unique_fd ba_read(ba[0]);
  unique_fd ba_write(ba[1]);
  return {connection(ex, std::move(ba_read), std::move(ab_write), options),
          connection(ex, std::move(ab_read), std::move(ba_write), options)};
}

}  // namespace coproc
