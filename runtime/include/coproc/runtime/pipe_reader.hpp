#pragma once
/// coproc::pipe_reader: the read end of a pipe driven by the io_uring ring;
/// coproc::make_pipe.

#include <asio/any_io_executor.hpp>
#include <cstddef>
#include <system_error>
#include <utility>

#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

/// Creates a pipe with pipe2(O_CLOEXEC): {read end, write end}. The ends stay
/// blocking: the ring, not O_NONBLOCK, keeps the loop from blocking, and a
/// child can use them with plain read/write.
/// Throws std::system_error naming pipe2.
std::pair<unique_fd, unique_fd> make_pipe();

/// The read end of a pipe (or any stream fd) read through the uring_service of
/// the executor's io_context. Meets Asio's AsyncReadStream requirements, so
/// asio::async_read and asio::async_read_until work on it.
///
/// Destroying or closing the reader cancels its pending reads (they complete
/// with operation_aborted).
/// Thread safety: distinct objects: safe; shared objects: unsafe.
class pipe_reader {
 public:
  using executor_type = asio::any_io_executor;

  /// Takes ownership of `fd`. Throws what uring_service construction throws.
  pipe_reader(const executor_type& ex, unique_fd fd) : end_(ex, std::move(fd)) {}
  pipe_reader(pipe_reader&&) noexcept = default;
  pipe_reader& operator=(pipe_reader&&) noexcept = default;

  executor_type get_executor() const noexcept { return end_.executor(); }
  int native_handle() const noexcept { return end_.fd(); }
  bool is_open() const noexcept { return end_.is_open(); }

  /// Cancels every pending read (they complete with operation_aborted).
  void cancel() noexcept { end_.cancel(); }
  /// Cancels pending reads and closes the fd.
  void close() noexcept { end_.close(); }
  /// Cancels pending reads and gives the fd back.
  unique_fd release() noexcept { return end_.release(); }

  /// Reads at least one byte into `buffers` (up to 16 buffers, READ or READV).
  ///
  /// Completion signature: void(std::error_code, std::size_t). End of stream is
  /// asio::error::eof; an empty buffer sequence completes with 0 bytes.
  /// Cancellation: terminal, partial and total (the read is withdrawn with
  /// IORING_OP_ASYNC_CANCEL; it completes with operation_aborted, or with the
  /// data if it won the race, once both CQEs arrived).
  /// The buffers must stay valid until completion.
  template <class MutableBufferSequence, class Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    return end_.async_read(buffers, std::forward<Token>(token));
  }

 private:
  detail::pipe_end end_;
};

}  // namespace coproc
