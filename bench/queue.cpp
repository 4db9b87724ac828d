// bench_queue: coproc::queue's rows of the benchmark report.
//
//   bench_queue queue [--quick]
//
// Items/s from one producer process to one consumer process (the parent),
// 8-byte and 4 KiB items, with the consumer blocking in get() or awaiting
// async_get() in an io_context; and a round trip through two queues (as
// bench/peers/mpq_peer.py measures multiprocessing.Queue). Output: one JSON
// object per line, the protocol described in bench/run.py.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "coproc/ipc/queue.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

bool quick = false;

void emit(std::string_view metric, std::string_view contender, double value, std::string_view unit,
          std::string_view better) {
  std::printf(
      "{\"metric\": \"%.*s\", \"contender\": \"%.*s\", \"value\": %.6g, \"unit\": \"%.*s\", "
      "\"better\": \"%.*s\"}\n",
      static_cast<int>(metric.size()), metric.data(), static_cast<int>(contender.size()),
      contender.data(), value, static_cast<int>(unit.size()), unit.data(),
      static_cast<int>(better.size()), better.data());
  std::fflush(stdout);
}

// A producer child: waits for the start byte, puts `n` copies of make(i), leaves.
template <class T, class Make>
pid_t start_producer(coproc::queue<T>& q, int go_fd, std::size_t n, Make make) {
  pid_t pid = ::fork();
  if (pid == 0) {
    char c;
    if (::read(go_fd, &c, 1) != 1) {
      ::_exit(2);
    }
    for (std::size_t i = 0; i < n; ++i) {
      q.put(make(i));
    }
    ::_exit(0);
  }
  return pid;
}

void reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
}

struct go_pipe {
  int fds[2] = {-1, -1};
  go_pipe() {
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      std::perror("pipe2");
      std::exit(1);
    }
  }
  ~go_pipe() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  void go() const {
    char c = 1;
    while (::write(fds[1], &c, 1) != 1) {
    }
  }
};

// Items/s one way; the consumer is the calling process.
template <class T, class Make>
double tput_blocking(std::size_t n, Make make) {
  coproc::queue<T> q;
  go_pipe p;
  pid_t pid = start_producer(q, p.fds[0], n, make);
  auto t0 = clock_type::now();
  p.go();
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    T v = q.get();
    bytes += sizeof v;
  }
  double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  reap(pid);
  return bytes != 0 ? static_cast<double>(n) / secs : 0;
}

// `batch` 0: async_get per item; else async_get_some(batch).
template <class T, class Make>
double tput_async(std::size_t n, Make make, std::size_t batch = 0) {
  coproc::queue<T> q;
  go_pipe p;
  pid_t pid = start_producer(q, p.fds[0], n, make);
  asio::io_context ctx;
  double secs = 0;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        auto t0 = clock_type::now();
        p.go();
        if (batch == 0) {
          for (std::size_t i = 0; i < n; ++i) {
            T v = co_await q.async_get(asio::use_awaitable);
            (void)v;
          }
        } else {
          for (std::size_t got = 0; got < n;) {
            std::vector<T> v = co_await q.async_get_some(batch, asio::use_awaitable);
            got += v.size();
          }
        }
        secs = std::chrono::duration<double>(clock_type::now() - t0).count();
      },
      asio::detached);
  ctx.run();
  reap(pid);
  return static_cast<double>(n) / secs;
}

// Median round trip (us): put into one queue, an echo process puts it back.
double rtt_p50(std::size_t n) {
  coproc::queue<std::uint64_t> to, back;
  pid_t pid = ::fork();
  if (pid == 0) {
    for (std::size_t i = 0; i < n + 1; ++i) {
      back.put(to.get());
    }
    ::_exit(0);
  }
  to.put(0);
  back.get();  // the echo process is up
  std::vector<double> us;
  us.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto t0 = clock_type::now();
    to.put(i);
    back.get();
    us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
  }
  reap(pid);
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

void group_queue() {
  const std::size_t n8 = quick ? 200'000 : 2'000'000;
  const std::size_t n4k = quick ? 20'000 : 200'000;
  auto small = [](std::size_t i) { return static_cast<std::uint64_t>(i); };
  auto page = [](std::size_t i) { return std::string(4096, static_cast<char>('a' + i % 26)); };
  emit("queue_tput", "coproc::queue get (8 B)", tput_blocking<std::uint64_t>(n8, small), "items/s",
       "higher");
  emit("queue_tput", "coproc::queue async_get (8 B)", tput_async<std::uint64_t>(n8, small),
       "items/s", "higher");
  emit("queue_tput", "coproc::queue async_get_some(256) (8 B)",
       tput_async<std::uint64_t>(n8, small, 256), "items/s", "higher");
  emit("queue_tput_4KiB", "coproc::queue get (4 KiB)", tput_blocking<std::string>(n4k, page),
       "items/s", "higher");
  emit("queue_tput_4KiB", "coproc::queue async_get (4 KiB)", tput_async<std::string>(n4k, page),
       "items/s", "higher");
  emit("queue_tput_4KiB", "coproc::queue async_get_some(32) (4 KiB)",
       tput_async<std::string>(n4k, page, 32), "items/s", "higher");
  emit("queue_rtt_p50", "coproc::queue (2 queues)", rtt_p50(quick ? 2'000 : 20'000), "us", "lower");
}

}  // namespace

int main(int argc, char** argv) {
  std::string group = argc > 1 ? argv[1] : "";
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    }
  }
  if (group != "queue") {
    std::fprintf(stderr, "usage: bench_queue queue [--quick]\n");
    return 2;
  }
  group_queue();
  return 0;
}
