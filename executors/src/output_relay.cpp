#include "output_relay.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>

#include "coproc/runtime/detail/fd_io.hpp"
#include "coproc/runtime/detail/fd_passing.hpp"
#include "coproc/runtime/detail/nosigpipe.hpp"
#include "coproc/runtime/detail/system_error.hpp"

namespace coproc::detail {
namespace {

constexpr std::size_t max_line = 64 * 1024;  // a longer line is passed on in pieces
constexpr auto drain_bound = std::chrono::milliseconds(500);
// Streams kept at once. Workers send two each; a task can send more on the
// same socket (it runs in the worker), which must not exhaust the host's fds.
constexpr std::size_t max_streams = 4096;

struct hello {
  std::int32_t pid;
};

// A host stream that is gone drops the line, not the relay.
void write_all(int fd, const char* data, std::size_t size) noexcept {
  transfer_full(data, size,
                [fd](const char* p, std::size_t n) { return write_nosigpipe(fd, p, n); });
}

}  // namespace

struct output_relay::stream {
  int pid = 0;
  int number = 1;  // 1: stdout, 2: stderr
  unique_fd fd;
  std::string pending;  // bytes after the last newline
};

output_relay::output_relay(worker_output mode, callback cb, asio::any_io_executor ex)
    : mode_(mode), callback_(std::make_shared<callback>(std::move(cb))), ex_(std::move(ex)) {
  int pair[2];
  check_syscall(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), "socketpair");
  host_end_.reset(pair[0]);
  worker_end_.reset(pair[1]);
  stop_fd_.reset(check_syscall(::eventfd(0, EFD_CLOEXEC), "eventfd"));
}

void output_relay::start() {
  thread_ = std::thread([this] { run(); });
}

void output_relay::stop(bool discard) noexcept {
  if (!thread_.joinable()) {
    return;
  }
  discard_ = discard;
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
  thread_.join();
}

void output_relay::abandon() noexcept {
  if (thread_.joinable()) {
    thread_.detach();  // no such thread here: detaching only forgets the handle
  }
}

// Every pipe a worker sent (MSG_CMSG_CLOEXEC: they stay this process's own).
void output_relay::receive(std::vector<stream>& streams) noexcept {
  for (;;) {
    hello h{};
    int fds[2] = {-1, -1};
    std::size_t count = 0;
    if (recv_with_fds(host_end_.get(), &h, sizeof h, fds, count, MSG_DONTWAIT) <= 0) {
      return;
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (streams.size() >= max_streams) {
        ::close(fds[i]);  // a task sending pipes in a loop: the host keeps its fds
        continue;
      }
      stream s;
      s.pid = h.pid;
      s.number = static_cast<int>(i) + 1;
      s.fd.reset(fds[i]);
      streams.push_back(std::move(s));
    }
  }
}

void output_relay::emit(const stream& s, std::string_view line) noexcept {
  if (discard_) {
    return;
  }
  try {
    if (mode_ == worker_output::prefix_pid) {
      std::string out = "[worker " + std::to_string(s.pid) + "] ";
      out.append(line);
      out.push_back('\n');
      write_all(s.number, out.data(), out.size());
    } else if (*callback_) {
      asio::post(ex_, [cb = callback_, pid = s.pid, number = s.number, text = std::string(line)] {
        (*cb)(pid, number, text);
      });
    }
  } catch (...) {
    // Out of memory for one line: that line is lost, the relay goes on.
  }
}

// Reads what is there (poll said so: the read does not block) and passes on
// every whole line; false at the end of the stream, its last piece passed on.
bool output_relay::pump(stream& s) noexcept {
  char buf[16 * 1024];
  ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
    return true;
  }
  if (n <= 0) {
    if (!s.pending.empty()) {
      emit(s, s.pending);
    }
    return false;
  }
  std::string_view in(buf, static_cast<std::size_t>(n));
  while (!in.empty()) {
    std::size_t nl = in.find('\n');
    if (nl == std::string_view::npos) {
      s.pending.append(in);
      break;
    }
    if (s.pending.empty()) {
      emit(s, in.substr(0, nl));
    } else {
      s.pending.append(in.substr(0, nl));
      emit(s, s.pending);
      s.pending.clear();
    }
    in.remove_prefix(nl + 1);
  }
  while (s.pending.size() >= max_line) {
    emit(s, std::string_view(s.pending).substr(0, max_line));
    s.pending.erase(0, max_line);
  }
  return true;
}

void output_relay::run() noexcept {
  std::vector<stream> streams;
  std::vector<pollfd> polled;
  bool stopping = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  for (;;) {
    if (stopping && (streams.empty() || discard_ || std::chrono::steady_clock::now() >= deadline)) {
      break;
    }
    polled.clear();
    polled.push_back({stop_fd_.get(), static_cast<short>(stopping ? 0 : POLLIN), 0});
    polled.push_back({host_end_.get(), POLLIN, 0});
    for (const stream& s : streams) {
      polled.push_back({s.fd.get(), POLLIN, 0});
    }
    int timeout = -1;
    if (stopping) {
      timeout = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     deadline - std::chrono::steady_clock::now())
                                     .count()) +
                1;
    }
    int ready = ::poll(polled.data(), polled.size(), timeout);
    if (ready < 0 && errno != EINTR) {
      break;
    }
    if ((polled[0].revents & POLLIN) != 0) {
      stopping = true;
      deadline = std::chrono::steady_clock::now() + drain_bound;
      receive(streams);  // workers that started just before
    }
    // Pipes first, then new ones: indices of `polled` match `streams` as built.
    std::size_t kept = 0;
    for (std::size_t i = 0; i < streams.size(); ++i) {
      short ev = i + 2 < polled.size() ? polled[i + 2].revents : 0;
      bool alive = ev == 0 || pump(streams[i]);
      if (alive) {
        if (kept != i) {
          streams[kept] = std::move(streams[i]);
        }
        ++kept;
      }
    }
    streams.resize(kept);
    if ((polled[1].revents & POLLIN) != 0) {
      receive(streams);
    }
  }
  for (stream& s : streams) {  // past the bound: what was there, even without a newline
    if (!s.pending.empty()) {
      emit(s, s.pending);
    }
  }
}

void redirect_worker_output(int socket_fd) noexcept {
  int out[2];
  int err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    return;
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return;
  }
  hello h{static_cast<std::int32_t>(::getpid())};
  const int reads[2] = {out[0], err[0]};
  ssize_t sent = send_with_fds(socket_fd, &h, sizeof h, reads);
  if (sent == static_cast<ssize_t>(sizeof h)) {
    std::fflush(nullptr);
    ::dup2(out[1], STDOUT_FILENO);  // dup2 leaves the copies inheritable, as stdio is
    ::dup2(err[1], STDERR_FILENO);
  }
  for (int fd : {out[0], out[1], err[0], err[1]}) {
    ::close(fd);
  }
  ::close(socket_fd);  // sent: the tasks this worker runs get no way to the relay
}

}  // namespace coproc::detail
