// libFuzzer target: coproc::connection's receive side over bytes a peer wrote
// (any bytes at all) into a connection pair (two pipes). receive<T>() may only return a value or
// throw std::system_error with frame_corrupt, frame_too_large (against a small
// configured max_message_size) or end_of_stream; it must never allocate for
// a frame larger than that maximum.
//
// Input: [selector][stream bytes...].

#include <sys/socket.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

#include "coproc/ipc/pipe.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "fuzz_support.hpp"

namespace {

template <class T>
bool receive_one(coproc::connection& c) {
  try {
    (void)c.receive<T>();
    return true;
  } catch (const std::system_error& e) {
    if (e.code() == coproc::errc::end_of_stream) {
      return false;
    }
    coproc::fuzz::allow_only_frame_errors(e);
    // After a header error the stream is out of step: the caller closes.
    return e.code() != coproc::errc::frame_too_large;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 ||
      size > 60000) {  // stays within one pipe (64 KiB) or socket buffer: no writer thread
    return 0;
  }
  static asio::io_context ctx;
  auto [reader, writer] = coproc::make_connection_pair(
      ctx.get_executor(), {.max_message_size = 4096, .spin = std::chrono::microseconds(0)});
  int fd = writer.release().release();
  std::size_t off = 1;
  while (off < size) {
    ssize_t n = ::write(fd, data + off, size - off);  // a pipe or a socket
    if (n <= 0) {
      break;
    }
    off += static_cast<std::size_t>(n);
  }
  ::close(fd);  // the reader then sees end_of_stream after the bytes
  for (int i = 0; i < 16; ++i) {
    bool more = false;
    switch (data[0] % 5) {
      case 0:
        more = receive_one<std::string>(reader);
        break;
      case 1:
        more = receive_one<std::vector<std::int32_t>>(reader);
        break;
      case 2:
        more = receive_one<std::map<std::string, std::optional<double>>>(reader);
        break;
      case 3:
        more = receive_one<std::variant<std::int64_t, std::string, std::vector<bool>>>(reader);
        break;
      default:
        more = receive_one<coproc::remote_error>(reader);
        break;
    }
    if (!more) {
      break;
    }
  }
  return 0;
}
