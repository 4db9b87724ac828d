#include "coproc/executors/manager.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/experimental/channel.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <list>

#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/fd_passing.hpp"
#include "coproc/runtime/detail/system_error.hpp"

namespace coproc::detail {
namespace {

// The server keeps only stdio and its connect socket: an inherited copy of
// some other socket (another manager's client, a pool's pipe) would keep that
// peer from ever seeing end of stream.
int keep_only(int fd) {
  constexpr int target = 3;
  if (fd != target) {
    if (::dup3(fd, target, O_CLOEXEC) < 0) {
      ::_exit(1);
    }
  }
  ::close_range(target + 1, ~0U, 0);
  return target;
}

unique_fd receive_fd(int sock, bool& closed) {
  char byte = 0;
  int fd = -1;
  std::size_t got = 0;
  ssize_t r = recv_with_fds(sock, &byte, 1, std::span<int>(&fd, 1), got);
  closed = r == 0 || (r < 0 && errno != EAGAIN);
  return got == 1 ? unique_fd(fd) : unique_fd();
}

}  // namespace

std::pair<unique_fd, unique_fd> make_manager_socket() {
  int fds[2];
  check_syscall(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), "socketpair");
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

void run_manager_server(int connect_fd, serve_fn serve, void* state) {
  int listen_fd = keep_only(connect_fd);
  asio::io_context unused;  // connections want an executor; only blocking calls run here
  std::list<connection> clients;
  std::vector<pollfd> fds;
  std::vector<std::list<connection>::iterator> order;
  bool listening = true;
  for (;;) {
    fds.clear();
    order.clear();
    if (listening) {
      fds.push_back({listen_fd, POLLIN, 0});
    }
    for (auto it = clients.begin(); it != clients.end(); ++it) {
      fds.push_back({it->native_handle(), POLLIN, 0});
      order.push_back(it);
    }
    if (fds.empty()) {
      return;  // no client can ever reach us again
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;
    }
    std::size_t first_client = listening ? 1 : 0;
    if (listening && fds[0].revents != 0) {
      bool closed = false;
      unique_fd fd = receive_fd(listen_fd, closed);
      if (fd) {
        clients.emplace_back(unused.get_executor(), std::move(fd),
                             connection_options{.spin = std::chrono::microseconds(0)});
      }
      if (closed) {
        listening = false;  // every process holding the client end is gone
      }
    }
    for (std::size_t i = first_client; i < fds.size(); ++i) {
      if (fds[i].revents != 0 && !serve(*order[i - first_client], state)) {
        clients.erase(order[i - first_client]);
      }
    }
  }
}

unique_fd manager_connect(int connect_fd) {
  int fds[2];
  check_syscall(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), "socketpair");
  unique_fd mine(fds[0]);
  unique_fd theirs(fds[1]);
  const char byte = 'c';
  const int fd = theirs.get();
  ssize_t r = send_with_fds(connect_fd, &byte, 1, std::span<const int>(&fd, 1));
  if (r < 0) {
    if (errno == EPIPE || errno == ECONNRESET || errno == ECONNREFUSED || errno == ENOTCONN) {
      throw std::system_error(errc::peer_died, "coproc::manager: connect");
    }
    throw_errno("sendmsg");
  }
  return mine;
}

// Orders a process's async requests: one slot, taken by a send, given back by
// a receive. Asio 1.22's channel_traits is ambiguous for void(error_code): a
// dummy bool.
struct manager_client::gate {
  explicit gate(const asio::any_io_executor& ex) : channel(ex, 1) {}
  asio::experimental::channel<void(std::error_code, bool)> channel;
};

manager_client::manager_client(const asio::any_io_executor& ex, unique_fd connect_fd)
    : ex_(ex), connect_fd_(std::move(connect_fd)), gate_(std::make_unique<gate>(ex)) {}

manager_client::~manager_client() = default;

asio::awaitable<void> manager_client::acquire_gate() {
  co_await gate_->channel.async_send(std::error_code(), true, asio::use_awaitable);
}

void manager_client::release_gate() noexcept {
  gate_->channel.try_receive([](std::error_code, bool) {});
}

connection& manager_client::ensure() {
  pid_t self = ::getpid();
  if (conn_ && conn_pid_ == self) {
    return *conn_;
  }
  if (conn_) {
    // Inherited from the process that forked us: its stream is not ours.
    // close() from another process only closes the fd (never the ring).
    conn_->close();
    conn_.reset();
  }
  conn_.emplace(ex_, manager_connect(connect_fd_.get()));
  conn_pid_ = self;
  return *conn_;
}

void manager_client::drop() noexcept {
  if (conn_) {
    conn_->close();
    conn_.reset();
  }
  conn_pid_ = -1;
}

void manager_client::throw_peer_died(const std::system_error& e) {
  if (e.code() == errc::end_of_stream || e.code() == errc::peer_died) {
    throw std::system_error(errc::peer_died, "coproc::manager: the server process died");
  }
  throw e;
}

}  // namespace coproc::detail
