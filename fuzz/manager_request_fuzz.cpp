// libFuzzer target: both ends of coproc::manager's wire. A client process
// (any bytes at all) writes requests to the server: manager_store::serve_one
// may only answer a well-formed request or drop that client (return false),
// never crash, throw, or allocate for a frame beyond what the bytes justify.
// A server (any bytes at all) writes replies to a client: the proxy's
// receive of a manager_reply may only return a reply or throw
// std::system_error with a frame error (the proxy turns those into
// peer_died).
//
// Input: [selector][stream bytes...]. Selector bit 0: server or client side;
// bit 1: <std::string, std::vector<std::int32_t>> or <std::int64_t, std::string>.
//
//   ./x fuzz 30       (or build-fuzz/fuzz/manager_request_fuzz -max_total_time=30)

#include <sys/socket.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>
#include <vector>

#include "coproc/executors/manager.hpp"
#include "coproc/ipc/pipe.hpp"
#include "fuzz_support.hpp"

namespace {

asio::io_context& context() {
  static asio::io_context ctx;
  return ctx;
}

/// Writes the stream into one end of a socketpair: with `half_close` the
/// peer's replies can still arrive there.
int feed(const std::uint8_t* data, std::size_t size, int fd, bool half_close) {
  std::size_t off = 0;
  while (off < size) {
    ssize_t n = ::write(fd, data + off, size - off);  // a pipe or a socket
    if (n <= 0) {
      break;
    }
    off += static_cast<std::size_t>(n);
  }
  if (half_close) {
    ::shutdown(fd, SHUT_WR);
    return fd;
  }
  ::close(fd);
  return -1;
}

/// The server side: the same connection options as run_manager_server's.
template <class K, class V>
void serve(const std::uint8_t* data, std::size_t size) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    std::abort();
  }
  coproc::connection server(context().get_executor(), coproc::unique_fd(fds[0]),
                            coproc::connection_options{.spin = std::chrono::microseconds(0)});
  int client = feed(data, size, fds[1], true);
  coproc::detail::manager_store<K, V> store;
  std::vector<char> sink(1 << 16);
  for (int i = 0; i < 64; ++i) {
    // serve_one is noexcept in effect: it catches everything itself.
    bool keep = coproc::detail::manager_store<K, V>::serve_one(server, &store);
    while (::recv(client, sink.data(), sink.size(), MSG_DONTWAIT) > 0) {
      // the replies: drained so the server's send never waits
    }
    if (!keep) {
      break;
    }
  }
  ::close(client);
}

/// The client side: what a proxy's call<reply>() receives.
template <class K, class V>
void receive_replies(const std::uint8_t* data, std::size_t size) {
  auto [client, server] = coproc::make_connection_pair(context().get_executor(),
                                                       {.spin = std::chrono::microseconds(0)});
  feed(data, size, server.release().release(), false);
  for (int i = 0; i < 16; ++i) {
    try {
      auto r = client.receive<coproc::detail::manager_reply<K, V>>();
      (void)std::get<2>(r).size();
    } catch (const std::system_error& e) {
      if (e.code() == coproc::errc::end_of_stream) {
        break;
      }
      coproc::fuzz::allow_only_frame_errors(e);
      if (e.code() != coproc::errc::frame_corrupt) {
        break;  // a header error: the stream is out of step, the proxy drops it
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 ||
      size > 60000) {  // stays within one pipe (64 KiB) or socket buffer: no writer thread
    return 0;
  }
  const std::uint8_t selector = data[0];
  ++data;
  --size;
  switch (selector % 4) {
    case 0:
      serve<std::string, std::vector<std::int32_t>>(data, size);
      break;
    case 1:
      receive_replies<std::string, std::vector<std::int32_t>>(data, size);
      break;
    case 2:
      serve<std::int64_t, std::string>(data, size);
      break;
    default:
      receive_replies<std::int64_t, std::string>(data, size);
      break;
  }
  return 0;
}
