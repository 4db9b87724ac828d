// bench_pipe: coproc::connection round trips between two processes, in the
// JSON-lines protocol of bench/run.py (`bench_pipe pipe [--quick]`).
// Rows: pipe_rtt_p50/p99 (8 B, as multiprocessing.Pipe's rows), pipe_rtt_4KiB_p50,
// with blocking calls on both sides (as Python's peer does) and with the
// parent awaiting through the io_uring loop; pipe_tput (one way, 8 B).

#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <coproc/ipc/pipe.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

void emit(const char* metric, const std::string& contender, double value, const char* unit,
          const char* better) {
  std::printf(
      "{\"metric\": \"%s\", \"contender\": \"%s\", \"value\": %.3f, \"unit\": \"%s\", "
      "\"better\": \"%s\"}\n",
      metric, contender.c_str(), value, unit, better);
  std::fflush(stdout);
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) {
    return 0;
  }
  auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

// Pins the calling thread to `cpu` (-1: leaves it alone); false when refused.
bool pin_to(int cpu) {
  if (cpu < 0) {
    return true;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// Forks an echo peer that answers `n` messages of type T with blocking calls
// (on `child_cpu` when not -1).
template <class T>
pid_t fork_echo(coproc::connection& mine, coproc::connection& theirs, int n, int child_cpu = -1) {
  pid_t pid = ::fork();
  if (pid == 0) {
    (void)pin_to(child_cpu);
    mine.close();
    try {
      for (int i = 0; i < n; ++i) {
        theirs.send(theirs.receive<T>());
      }
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  theirs.close();
  return pid;
}

// The pair over one socketpair (the design before two pipes), for comparison.
std::pair<coproc::connection, coproc::connection> socket_pair(const asio::any_io_executor& ex,
                                                              coproc::connection_options o) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    std::perror("socketpair");
    std::exit(1);
  }
  return {coproc::connection(ex, coproc::unique_fd(fds[0]), o),
          coproc::connection(ex, coproc::unique_fd(fds[1]), o)};
}

// `cross_cpu`: parent on CPU 0 and echo peer on CPU 1 (the placement where a
// bounded spin pays: both run at once, a sleeping peer costs a cross-CPU
// wake-up); the parent's affinity is restored afterwards.
template <class T>
std::vector<double> blocking_rtt(const T& msg, int n, coproc::connection_options o = {},
                                 bool over_socket = false, bool cross_cpu = false) {
  cpu_set_t saved;
  CPU_ZERO(&saved);
  ::sched_getaffinity(0, sizeof saved, &saved);
  if (cross_cpu && !pin_to(0)) {
    return {};
  }
  asio::io_context ctx;
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto a_b_ends = over_socket ? socket_pair(ctx.get_executor(), o)
                              : coproc::make_connection_pair(ctx.get_executor(), o);
  [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
  [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
  const int warm = 200;
  pid_t pid = fork_echo<T>(a, b, n + warm, cross_cpu ? 1 : -1);
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n + warm; ++i) {
    auto t0 = clock_type::now();
    a.send(msg);
    T back = a.receive<T>();
    auto dt = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
    if (i >= warm) {
      us.push_back(dt);
    }
    (void)back;
  }
  ::waitpid(pid, nullptr, 0);
  ::sched_setaffinity(0, sizeof saved, &saved);
  std::sort(us.begin(), us.end());
  return us;
}

template <class T>
asio::awaitable<void> async_rtt_body(coproc::connection* a, T msg, int n, int warm,
                                     std::vector<double>* us) {
  for (int i = 0; i < n + warm; ++i) {
    auto t0 = clock_type::now();
    co_await a->async_send(msg, asio::use_awaitable);
    T back = co_await a->async_receive<T>(asio::use_awaitable);
    auto dt = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
    if (i >= warm) {
      us->push_back(dt);
    }
    (void)back;
  }
}

template <class T>
std::vector<double> async_rtt(const T& msg, int n) {
  asio::io_context ctx;
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
  [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
  [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
  const int warm = 200;
  pid_t pid = fork_echo<T>(a, b, n + warm);
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  asio::co_spawn(ctx, async_rtt_body<T>(&a, msg, n, warm, &us), asio::detached);
  ctx.run();
  ::waitpid(pid, nullptr, 0);
  std::sort(us.begin(), us.end());
  return us;
}

double one_way_rate(int n) {
  asio::io_context ctx;
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
  [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
  [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
  pid_t pid = ::fork();
  if (pid == 0) {
    a.close();
    try {
      for (int i = 0; i < n; ++i) {
        b.send(std::uint64_t(i));
      }
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  b.close();
  auto t0 = clock_type::now();
  for (int i = 0; i < n; ++i) {
    (void)a.receive<std::uint64_t>();
  }
  double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  ::waitpid(pid, nullptr, 0);
  return n / secs;
}

// One 64 MiB message, blocking send in a child and blocking receive here:
// milliseconds per message (median of `reps`), over pipes or a socketpair.
double big_message_ms(int reps, bool over_socket) {
  asio::io_context ctx;
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto a_b_ends = over_socket ? socket_pair(ctx.get_executor(), {})
                              : coproc::make_connection_pair(ctx.get_executor());
  [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
  [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
  const std::vector<char> big(std::size_t{64} << 20, 'b');
  pid_t pid = ::fork();
  if (pid == 0) {
    a.close();
    try {
      for (int i = 0; i < reps; ++i) {
        (void)b.receive<int>();  // go
        b.send(big);
      }
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  b.close();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    auto t0 = clock_type::now();
    a.send(i);
    auto got = a.receive<std::vector<char>>();
    ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
    if (got.size() != big.size()) {
      std::exit(1);
    }
  }
  ::waitpid(pid, nullptr, 0);
  std::sort(ms.begin(), ms.end());
  return percentile(ms, 0.5);
}

void group_pipe(bool quick) {
  const int n = quick ? 500 : 5000;
  const std::uint64_t small = 42;
  const std::string page(4096, 'p');
  {
    auto us = blocking_rtt(small, n);
    emit("pipe_rtt_p50", "coproc::connection (blocking, 8 B)", percentile(us, 0.5), "us", "lower");
    emit("pipe_rtt_p99", "coproc::connection (blocking, 8 B)", percentile(us, 0.99), "us", "lower");
  }
  {
    auto us = blocking_rtt(small, n, {.spin = std::chrono::microseconds(0)});
    emit("pipe_rtt_p50", "coproc::connection (blocking, no spin, 8 B)", percentile(us, 0.5), "us",
         "lower");
  }
  {
    auto us = blocking_rtt(small, n, {.spin = std::chrono::microseconds(0)}, true);
    emit("pipe_rtt_p50", "coproc::connection over a socketpair (blocking, no spin, 8 B)",
         percentile(us, 0.5), "us", "lower");
  }
  if (::sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
    // Fixed cross-CPU placement: with and without the receive spin.
    auto spin = blocking_rtt(small, n, {}, false, true);
    auto sleep = blocking_rtt(small, n, {.spin = std::chrono::microseconds(0)}, false, true);
    if (!spin.empty() && !sleep.empty()) {
      // Own metric: the headline row compares like placements only.
      emit("pipe_rtt_cross_cpu_p50", "coproc::connection (blocking, CPUs 0|1, spin, 8 B)",
           percentile(spin, 0.5), "us", "lower");
      emit("pipe_rtt_cross_cpu_p50", "coproc::connection (blocking, CPUs 0|1, no spin, 8 B)",
           percentile(sleep, 0.5), "us", "lower");
    }
  }
  {
    auto us = async_rtt(small, n);
    emit("pipe_rtt_p50", "coproc::connection (async parent, 8 B)", percentile(us, 0.5), "us",
         "lower");
    emit("pipe_rtt_p99", "coproc::connection (async parent, 8 B)", percentile(us, 0.99), "us",
         "lower");
  }
  {
    auto us = blocking_rtt(page, n);
    emit("pipe_rtt_4KiB_p50", "coproc::connection (blocking)", percentile(us, 0.5), "us", "lower");
  }
  {
    auto us = async_rtt(page, n);
    emit("pipe_rtt_4KiB_p50", "coproc::connection (async parent)", percentile(us, 0.5), "us",
         "lower");
  }
  emit("pipe_64MiB_ms", "coproc::connection (blocking, one 64 MiB message)",
       big_message_ms(quick ? 2 : 5, false), "ms", "lower");
  emit("pipe_64MiB_ms", "coproc::connection over a socketpair (blocking, one 64 MiB message)",
       big_message_ms(quick ? 2 : 5, true), "ms", "lower");
  emit("pipe_tput", "coproc::connection (one way, 8 B)", one_way_rate(quick ? 20'000 : 200'000),
       "msgs/s", "higher");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s pipe [--quick]\n", argv[0]);
    return 2;
  }
  bool quick = argc > 2 && std::strcmp(argv[2], "--quick") == 0;
  if (std::strcmp(argv[1], "pipe") == 0) {
    group_pipe(quick);
    return 0;
  }
  return 0;  // other groups: nothing to say
}
