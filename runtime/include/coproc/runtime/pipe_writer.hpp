#pragma once
/// coproc::pipe_writer: the write end of a pipe driven by the io_uring ring.

#include <asio/any_io_executor.hpp>
#include <cstddef>
#include <system_error>
#include <utility>

#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

/// The write end of a pipe (or any stream fd) written through the uring_service
/// of the executor's io_context. Meets Asio's AsyncWriteStream requirements, so
/// asio::async_write works on it. A reader that closed its end makes writes
/// fail with broken_pipe (EPIPE) when SIGPIPE is ignored; coproc installs no
/// signal handler, so hosts that keep SIGPIPE's default die as with write(2).
///
/// Destroying or closing the writer cancels its pending writes.
/// Thread safety: distinct objects: safe; shared objects: unsafe.
class pipe_writer {
 public:
  using executor_type = asio::any_io_executor;

  /// Takes ownership of `fd`. Throws what uring_service construction throws.
  pipe_writer(const executor_type& ex, unique_fd fd) : end_(ex, std::move(fd)) {}
  pipe_writer(pipe_writer&&) noexcept = default;
  pipe_writer& operator=(pipe_writer&&) noexcept = default;

  executor_type get_executor() const noexcept { return end_.executor(); }
  int native_handle() const noexcept { return end_.fd(); }
  bool is_open() const noexcept { return end_.is_open(); }

  /// Cancels every pending write (they complete with operation_aborted).
  void cancel() noexcept { end_.cancel(); }
  /// Cancels pending writes and closes the fd.
  void close() noexcept { end_.close(); }
  /// Cancels pending writes and gives the fd back.
  unique_fd release() noexcept { return end_.release(); }

  /// Writes at least one byte of `buffers` (a short write is possible: use
  /// asio::async_write for all of it).
  ///
  /// A non-blocking write on the loop thread (RWF_NOWAIT: the fd stays
  /// blocking), and while the pipe is full a wait for room on the ring
  /// (POLL_ADD) or the epoll backend, then again.
  ///
  /// Completion signature: void(std::error_code, std::size_t). A pipe whose
  /// reader is gone gives EPIPE and never raises SIGPIPE.
  /// Cancellation: terminal, partial and total (the wait for room is
  /// withdrawn; a write that already moved bytes reports them).
  /// The buffers must stay valid until completion.
  template <class ConstBufferSequence, class Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return end_.async_write(buffers, std::forward<Token>(token));
  }

 private:
  detail::pipe_end end_;
};

}  // namespace coproc
