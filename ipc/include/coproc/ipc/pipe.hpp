#pragma once
/// coproc::connection and coproc::make_connection_pair: typed duplex message
/// connections between processes (Python's multiprocessing.Pipe()).

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <concepts>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <system_error>
#include <utility>

#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/detail/connection_core.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

/// One end of a duplex message connection (Python's multiprocessing
/// Connection): typed messages of any codable type and any size (up to
/// connection_options::max_message_size), sent as length-prefixed frames over
/// two pipes (make_connection_pair) or one connected AF_UNIX stream socket.
///
/// In the event loop, async_send/async_receive are driven by the io_uring ring
/// of the executor's io_context (coproc::uring_service); in plain code (a
/// forked child, a worker, a thread that may block) send/receive are blocking.
/// A message is typed by the receiver: it must name the type the sender sent
/// (the codec checks every length and flag, so a mismatch is a clean
/// errc::frame_corrupt, not undefined behaviour; it does not catch every
/// mismatch of same-sized trivially copyable types).
///
/// Errors: a peer that closed its end or died gives errc::end_of_stream (a
/// frame cut short by the peer's death too; once a receive saw the end, sends
/// give it as well: a peer's close or death ends both directions); bytes that are not a frame give
/// errc::frame_corrupt; a frame larger than max_message_size gives
/// errc::frame_too_large. After a header error (bad magic, too large) the
/// stream is out of step: close the connection. A payload that fails to decode
/// is consumed, so the next receive works.
///
/// Across fork: the child inherits both ends; it should close the end the
/// parent keeps (close() in a forked child only closes the fd: it never
/// touches the parent's ring) and use the blocking calls.
///
/// Sends never raise SIGPIPE: a socket is written with MSG_NOSIGNAL, a pipe
/// with SIGPIPE blocked in the calling thread for the duration of the write
/// (a SIGPIPE the write caused is taken before the mask is restored); the
/// ring only polls a pipe for room, it never writes to it.
/// Thread safety: distinct objects: safe; shared objects: unsafe. At most one
/// send and one receive may be in progress at a time (as for Asio streams);
/// one send and one receive may run at once (that is how two peers exchange
/// messages larger than the socket buffer without deadlock).
class connection {
 public:
  using executor_type = asio::any_io_executor;

  /// Takes ownership of `fd`, a connected AF_UNIX SOCK_STREAM socket.
  connection(const executor_type& ex, unique_fd fd, connection_options options = {});
  /// Takes ownership of two pipe ends: messages arrive on `read_end` and
  /// leave through `write_end` (what make_connection_pair builds).
  connection(const executor_type& ex, unique_fd read_end, unique_fd write_end,
             connection_options options = {});
  connection(connection&&) noexcept = default;
  connection& operator=(connection&& other) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  /// Closes the socket (pending operations complete with operation_aborted).
  ~connection();

  executor_type get_executor() const noexcept { return core_->executor(); }
  /// The fd messages arrive on (poll it for POLLIN): the read end of the
  /// inbound pipe, or the socket.
  int native_handle() const noexcept { return core_ ? core_->fd() : -1; }
  /// The fd messages leave through: the write end of the outbound pipe, or
  /// the socket (the same fd as native_handle()).
  int native_write_handle() const noexcept { return core_ ? core_->write_fd() : -1; }
  bool is_open() const noexcept { return core_ && core_->is_open(); }
  const connection_options& options() const noexcept { return core_->options(); }

  /// Withdraws pending async operations (they complete with operation_aborted).
  void cancel() noexcept {
    if (core_) {
      core_->cancel();
    }
  }
  /// Closes this end; the peer then gets errc::end_of_stream.
  void close() noexcept {
    if (core_) {
      core_->close();
    }
  }
  /// Gives the outbound fd up (pending async operations are cancelled): the
  /// socket, or the write end of the outbound pipe (the read end is closed,
  /// so the peer can still be fed raw bytes through the returned fd).
  unique_fd release() noexcept { return core_ ? core_->release() : unique_fd(); }

  /// Sends `value` as one message, blocking until the socket took all of it.
  /// Throws std::system_error: errc::end_of_stream (peer gone),
  /// errc::frame_too_large (encoded size above max_message_size: nothing is
  /// sent), or the errno of send(2).
  template <class T>
  void send(const T& value) {
    detail::check_codable<T>();
    detail::frame_buffer frame = encode_frame(value);
    if (std::error_code ec = core_->write_blocking({frame.data.get(), frame.size})) {
      throw std::system_error(ec, "coproc::connection::send");
    }
  }

  /// Receives one message of type T, blocking until it arrived whole.
  /// Throws std::system_error: errc::end_of_stream, errc::frame_corrupt,
  /// errc::frame_too_large, or the errno of recv(2).
  template <class T>
  T receive() {
    detail::check_codable<T>();
    for (;;) {
      std::span<const std::byte> payload;
      std::error_code ec;
      auto state = core_->parse(payload, ec);
      if (state == detail::connection_core::parse_result::ready) {
        return decode_consume<T>(payload);
      }
      if (state == detail::connection_core::parse_result::error) {
        throw std::system_error(ec, "coproc::connection::receive");
      }
      if (std::error_code rec = core_->read_blocking()) {
        throw std::system_error(rec, "coproc::connection::receive");
      }
    }
  }

  /// Sends `value` as one message through the ring. The value is encoded at
  /// once (the caller may change or destroy it right after the call).
  ///
  /// Completion signature: void(std::error_code). Errors as for send().
  /// Cancellation: terminal. Cancelled before any byte left: operation_aborted,
  /// the connection is intact. Cancelled mid-frame: operation_aborted, and the
  /// write side is shut down (the peer sees end_of_stream; later sends fail;
  /// close the connection: it is out of step).
  template <class T, class Token>
  auto async_send(const T& value, Token&& token) {
    detail::check_codable<T>();
    detail::frame_buffer frame;
    std::error_code ec;
    try {
      frame = encode_frame(value);
    } catch (const std::system_error& e) {
      ec = e.code();
    } catch (const std::bad_alloc&) {
      ec = std::make_error_code(std::errc::not_enough_memory);
    }
    return asio::async_initiate<Token, void(std::error_code)>(
        [](auto&& handler, std::shared_ptr<detail::connection_core> core, detail::frame_buffer f,
           std::error_code e) {
          auto ex = core->executor();
          asio::async_compose<std::decay_t<decltype(handler)>, void(std::error_code)>(
              send_op{std::move(core), std::move(f), e}, handler, ex);
        },
        token, core_, std::move(frame), ec);
  }

  /// Receives one message of type T through the ring.
  ///
  /// Completion signature: void(std::error_code, T) (T{} on error). Errors as
  /// for receive().
  /// Cancellation: terminal; bytes already read stay buffered, so a later
  /// receive resumes the same frame.
  template <class T, class Token>
  requires std::default_initializable<T>
  auto async_receive(Token&& token) {
    detail::check_codable<T>();
    return asio::async_compose<Token, void(std::error_code, T)>(receive_op<T>{core_}, token,
                                                                core_->executor());
  }

 private:
  template <class T>
  static detail::frame_buffer encode_frame_on(const detail::connection_core& core, const T& value) {
    std::size_t n = coproc::encoded_size(value);
    core.check_send_size(n);
    detail::frame_buffer frame = detail::make_frame(n);
    coproc::encode(std::span<std::byte>(frame.data.get() + detail::frame_header_size, n), value);
    return frame;
  }
  template <class T>
  detail::frame_buffer encode_frame(const T& value) {
    return encode_frame_on(*core_, value);
  }

  template <class T>
  T decode_consume(std::span<const std::byte> payload) {
    struct consume_guard {
      detail::connection_core& core;
      ~consume_guard() { core.consume(); }
    } guard{*core_};
    return decode_from<T>(payload);
  }

  struct send_op {
    std::shared_ptr<detail::connection_core> core;
    detail::frame_buffer frame;
    std::error_code ec;
    std::size_t done = 0;
    int phase = 0;  // 0: initiating, 1: ring send in flight, 2: completion posted

    template <class Self>
    void operator()(Self& self, std::error_code io_ec = {}, std::size_t n = 0) {
      if (phase == 2) {
        self.complete(ec);
        return;
      }
      if (phase == 1) {
        done += n;  // a pipe's POLL_ADD moved nothing (n == 0)
        if (!io_ec && self.get_cancellation_state().cancelled() != asio::cancellation_type::none &&
            done < frame.size) {
          io_ec = asio::error::operation_aborted;
        }
        if (io_ec) {
          ec = detail::connection_core::map_io_error(io_ec);
          if (done > 0 && done < frame.size) {
            core->break_writes();
          }
          self.complete(ec);
          return;
        }
        if (!core->is_socket()) {
          // The pipe has room (or no reader: the write says which).
          std::size_t sent = 0;
          std::error_code wec = core->try_write({frame.data.get() + done, frame.size - done}, sent);
          done += sent;
          if (wec && wec != asio::error::would_block) {
            ec = wec;
          }
        }
      } else if (!ec) {
        // Initiation: the socket buffer usually takes a small frame at once.
        std::size_t sent = 0;
        std::error_code wec = core->try_write({frame.data.get(), frame.size}, sent);
        done = sent;
        if (wec && wec != asio::error::would_block) {
          ec = wec;
        }
      }
      if (ec || done == frame.size) {
        if (phase == 0) {
          phase = 2;  // never complete inside the initiating function
          asio::post(std::move(self));
        } else {
          self.complete(ec);
        }
        return;
      }
      phase = 1;
      uring_service& service = core->service();
      if (core->is_socket()) {
        detail::launch_io_op<detail::send_impl>(service, core->executor(), std::move(self),
                                                core->fd(), frame.data.get() + done,
                                                frame.size - done);
      } else {
        detail::launch_io_op<detail::poll_out_impl>(service, core->executor(), std::move(self),
                                                    core->write_fd());
      }
    }
  };

  template <class T>
  struct receive_op {
    std::shared_ptr<detail::connection_core> core;
    std::error_code ec{};
    std::optional<T> value{};
    int phase = 0;  // 0: initiating, 1: ring read in flight, 2: completion posted

    template <class Self>
    void operator()(Self& self, std::error_code io_ec = {}, std::size_t n = 0) {
      if (phase == 2) {
        finish(self);
        return;
      }
      if (phase == 1) {
        if (io_ec) {
          if (io_ec == asio::error::eof) {
            core->mark_inbound_ended();
          }
          ec = detail::connection_core::map_io_error(io_ec);
          finish(self);
          return;
        }
        core->commit_read(n);
      }
      for (;;) {
        std::span<const std::byte> payload;
        std::error_code pec;
        auto state = core->parse(payload, pec);
        if (state == detail::connection_core::parse_result::ready) {
          decode(payload);
          break;
        }
        if (state == detail::connection_core::parse_result::error) {
          ec = pec;
          break;
        }
        if (phase == 0) {
          // A message already waiting needs no trip through the ring.
          std::size_t got = 0;
          std::error_code rec = core->try_read(got);
          if (!rec) {
            continue;
          }
          if (rec != asio::error::would_block) {
            ec = rec;
            break;
          }
        }
        if (!core->is_open()) {
          ec = asio::error::bad_descriptor;
          break;
        }
        phase = 1;
        std::span<std::byte> space = core->read_space();
        uring_service& service = core->service();
        detail::launch_io_op<detail::pipe_read_impl>(service, core->executor(), std::move(self),
                                                     core->fd(),
                                                     asio::buffer(space.data(), space.size()));
        return;
      }
      if (phase == 0) {
        phase = 2;
        asio::post(std::move(self));
        return;
      }
      finish(self);
    }

    void decode(std::span<const std::byte> payload) {
      try {
        value.emplace(decode_from<T>(payload));
      } catch (const std::system_error& e) {
        ec = e.code();
      } catch (const std::bad_alloc&) {
        ec = std::make_error_code(std::errc::not_enough_memory);
      } catch (...) {
        ec = errc::frame_corrupt;  // a user's cereal load() refused the bytes
      }
      core->consume();
    }

    template <class Self>
    void finish(Self& self) {
      if (ec || !value) {
        self.complete(ec ? ec : std::error_code(errc::frame_corrupt), T{});
      } else {
        T v = std::move(*value);
        value.reset();
        self.complete(std::error_code(), std::move(v));
      }
    }
  };

  std::shared_ptr<detail::connection_core> core_;
};

/// Creates a connected pair of connections (Python's multiprocessing.Pipe(),
/// duplex): two pipes (pipe2 with O_CLOEXEC), one per direction. Create it
/// before fork() and keep one end in each process.
/// Throws std::system_error naming pipe2.
std::pair<connection, connection> make_connection_pair(const asio::any_io_executor& ex,
                                                       connection_options options = {});

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <>
inline constexpr bool is_process_shared_v<connection> = true;

}  // namespace coproc
