#pragma once
// The state behind a coproc::connection: its fds (two pipes, or one
// connected AF_UNIX stream socket), the receive buffer and frame parser, the
// blocking I/O paths and the io_uring operations (SEND on a socket, POLL_ADD
// then a non-blocking write on a pipe, so the ring never raises SIGPIPE).
// Shared (shared_ptr) between the connection and its in-flight operations, so
// destroying or moving a connection never leaves an operation pointing at
// freed memory.
//
// Frame: a 16-byte header {u32 magic, i32 sender cpu, u64 payload size}, then
// the codec's bytes. The sender's CPU lets a blocking receiver decide whether
// spinning can pay off (only when the peer last ran on another CPU).

#include <liburing.h>
#include <sys/types.h>

#include <algorithm>
#include <asio/any_io_executor.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <tuple>

#include "coproc/ipc/detail/receive_buffer.hpp"
#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc {

/// Options of a coproc::connection; set with designated initialisers.
struct connection_options {
  /// Largest payload accepted (received) or sent, in bytes. A larger frame
  /// fails with errc::frame_too_large before anything is allocated for it.
  std::size_t max_message_size = std::size_t{1} << 32;
  /// How long a blocking receive() may poll the socket before it sleeps, when
  /// the peer last ran on another CPU (a cross-CPU wake-up costs ~40 us on
  /// small VMs, a poll answers in ~1 us). Zero disables spinning. Adaptive:
  /// spins that keep timing out are skipped for a while.
  std::chrono::microseconds spin = std::chrono::microseconds(50);
};

namespace detail {

inline constexpr std::uint32_t frame_magic = 0xC0F7A3E1u;
inline constexpr std::size_t frame_header_size = 16;

/// An owned byte buffer that is not zero-filled first (64 MiB frames).
struct frame_buffer {
  std::unique_ptr<std::byte[]> data;
  std::size_t size = 0;
};

/// Allocates a frame for a payload of `payload` bytes and writes its header.
frame_buffer make_frame(std::size_t payload);

class connection_core {
 public:
  /// Over one connected AF_UNIX stream socket.
  connection_core(const asio::any_io_executor& ex, unique_fd fd, const connection_options& o);
  /// Over two pipes: this end reads `read_end` and writes `write_end`.
  connection_core(const asio::any_io_executor& ex, unique_fd read_end, unique_fd write_end,
                  const connection_options& o);
  ~connection_core() { close(); }
  connection_core(const connection_core&) = delete;
  connection_core& operator=(const connection_core&) = delete;

  const asio::any_io_executor& executor() const noexcept { return ex_; }
  const connection_options& options() const noexcept { return options_; }
  /// The fd messages arrive on (the socket, or the read end of a pipe).
  int fd() const noexcept { return fd_.get(); }
  /// The fd messages leave through (the socket, or the write end of a pipe).
  int write_fd() const noexcept { return socket_ ? fd_.get() : wfd_.get(); }
  bool is_socket() const noexcept { return socket_; }
  bool is_open() const noexcept { return static_cast<bool>(fd_); }

  /// The ring of the executor's io_context (remembers that this process used
  /// it, so close() withdraws pending operations only where they exist).
  uring_service& service();

  /// Cancels ring operations on the fd (only in the process that started
  /// them: a forked child must never touch its parent's ring), then closes.
  void close() noexcept;
  unique_fd release() noexcept;
  void cancel() noexcept;

  // ---- receiving
  enum class parse_result { ready, need_more, error };
  /// Looks at the buffered bytes: `ready` sets `payload` (valid until
  /// consume()), `error` sets `ec` (frame_corrupt, frame_too_large).
  parse_result parse(std::span<const std::byte>& payload, std::error_code& ec);
  /// Drops the frame parse() returned.
  void consume() noexcept;
  /// Where the next read goes (never empty while a frame is incomplete).
  std::span<std::byte> read_space();
  void commit_read(std::size_t n) noexcept { end_ += n; }
  /// One recv(MSG_DONTWAIT): `got` bytes, or would_block, or end_of_stream.
  std::error_code try_read(std::size_t& got);
  /// One blocking read (after a bounded spin when it may pay off).
  std::error_code read_blocking();
  /// End of stream (eof, reset) becomes errc::end_of_stream.
  static std::error_code map_io_error(std::error_code ec) noexcept;
  bool buffered_partial() const noexcept { return end_ > begin_; }
  /// The inbound stream ended. Over pipes, sends fail from then on too: the
  /// peer's close or death ends both directions, but the kernel may release
  /// its two pipe ends in either order, so a send right after the end was
  /// seen could otherwise still find a reader and vanish.
  void mark_inbound_ended() noexcept { inbound_ended_ = true; }

  // ---- sending
  /// Sends all of `bytes` with blocking send(MSG_NOSIGNAL).
  std::error_code write_blocking(std::span<const std::byte> bytes);
  /// One send(MSG_DONTWAIT | MSG_NOSIGNAL): bytes moved in `sent`.
  std::error_code try_write(std::span<const std::byte> bytes, std::size_t& sent);
  /// After a send was abandoned mid-frame: shuts the write side down so the
  /// peer sees the end of the stream instead of waiting for the rest.
  void break_writes() noexcept;
  std::error_code write_error() const noexcept { return write_error_; }
  void check_send_size(std::size_t payload) const;

 private:
  void reserve_frame(std::size_t total);

  asio::any_io_executor ex_;
  uring_service* service_ = nullptr;
  pid_t ring_pid_ = -1;  // process that started ring operations on fd_
  unique_fd fd_;         // the socket, or the read end of the inbound pipe
  unique_fd wfd_;        // the write end of the outbound pipe (-1 for a socket)
  bool socket_ = true;
  connection_options options_;
  std::error_code write_error_;

  receive_buffer buf_;
  std::size_t begin_ = 0;        // first unconsumed byte
  std::size_t end_ = 0;          // one past the last received byte
  std::size_t frame_total_ = 0;  // header + payload of the frame parse() returned
  std::int32_t peer_cpu_ = -1;
  bool inbound_ended_ = false;
  unsigned spin_failures_ = 0;
  unsigned spin_skip_ = 0;
};

/// IORING_OP_SEND (or, on epoll, send with MSG_DONTWAIT) with MSG_NOSIGNAL: a dead peer gives
/// EPIPE, never SIGPIPE (pipe_writer's WRITE would raise SIGPIPE on a socket too).
struct send_impl {
  send_impl(int fd_in, const std::byte* p, std::size_t n) noexcept
      : fd(fd_in), data(p), len(std::min<std::size_t>(n, 0x7ffff000)) {}
  io_uring_sqe prepare() noexcept;
  reactor_plan plan() const { return reactor_plan::writable(fd); }
  /// send(MSG_DONTWAIT | MSG_NOSIGNAL).
  int attempt() noexcept;
  std::tuple<std::error_code, std::size_t> result(int res, bool cancel_requested) const noexcept {
    if (res < 0) {
      return {uring_error(res, cancel_requested), 0};
    }
    return {std::error_code(), static_cast<std::size_t>(res)};
  }

  int fd;
  const std::byte* data;
  std::size_t len;
};

}  // namespace detail
}  // namespace coproc
