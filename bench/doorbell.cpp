// bench_doorbell: how the parent's event loop should learn that a worker
// finished (the process_pool issue: "an eventfd polled by the loop, or a futex
// wait on the io_uring ring: measure both and keep the faster").
//
//   bench_doorbell doorbell [--quick] [--only K]   (K: one doorbell, 0-3 in the order below)
//
// A parent coroutine on an asio::io_context ping-pongs with a forked child
// through a shared-memory word. The child sleeps in a blocking futex wait
// (detail::futex_wait) for the ping, writes the pong word and rings the
// parent's doorbell; the parent, having rung the child (FUTEX_WAKE), waits on
// its loop for the doorbell, then checks the pong word. Doorbells, in the same
// run, in rotating order within each repetition, with the same child:
//
//   eventfd async_wait   the child writes an eventfd; the parent awaits
//                        stream_descriptor::async_wait(wait_read) (epoll), then
//                        reads the eventfd to reset it
//   eventfd async_read   the same eventfd, awaited with async_read_some into a
//                        16-byte buffer (how uring_service waits on its own
//                        eventfd: no EPOLL_CTL_MOD per wait)
//   futex on the ring    the child FUTEX_WAKEs the pong word; the parent awaits
//                        coproc::async_futex_wait (io_uring FUTEX_WAIT, whose
//                        completion reaches the loop through the ring's eventfd)
//   blocking futex       (limit) the parent blocks in futex_wait, no event loop
//
// Both placements in one run: every process pinned to CPU 0, and free.
// 20k round trips x 5 repetitions (quick: 2k x 3). Output: JSON lines
// (bench/run.py protocol), metric doorbell_rtt_{cpu0,free}: the median over
// repetitions of each repetition's p50 round trip, with the min and max of
// those p50s and the medians of the per-repetition mean and p99.
#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "coproc/runtime/detail/futex.hpp"
#include "coproc/runtime/futex_waiter.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

enum class bell : std::uint32_t { eventfd_wait, eventfd_read, ring_futex, blocking_futex };

constexpr std::array<bell, 4> bells = {bell::eventfd_wait, bell::eventfd_read, bell::ring_futex,
                                       bell::blocking_futex};

const char* name_of(bell b) {
  switch (b) {
    case bell::eventfd_wait:
      return "eventfd (async_wait + read)";
    case bell::eventfd_read:
      return "eventfd (async_read_some)";
    case bell::ring_futex:
      return "futex on the ring (async_futex_wait)";
    case bell::blocking_futex:
      return "blocking futex_wait (no loop)";
  }
  return "?";
}

// --only K: run doorbell K only (0..3, the order of `bells`), for strace -c.
int only = -1;

constexpr std::uint32_t stop_value = 0xffffffffu;

// Shared between parent and child (MAP_SHARED before fork). Each word on its
// own cache line.
struct alignas(64) shared_words {
  alignas(64) std::atomic<std::uint32_t> ping{0};
  alignas(64) std::atomic<std::uint32_t> pong{0};
  alignas(64) std::atomic<std::uint32_t> mode{0};
};

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

void set_placement(bool cpu0) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu0) {
    CPU_SET(0, &set);
  } else {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      CPU_SET(c, &set);
    }
  }
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    die("sched_setaffinity");
  }
}

// The child: sleep until ping moves, answer on pong, ring the doorbell the
// parent asked for (mode is written before ping, so it is visible here).
[[noreturn]] void child_loop(shared_words& w, int efd) {
  std::uint32_t seen = 0;
  for (;;) {
    std::uint32_t v = w.ping.load(std::memory_order_acquire);
    while (v == seen) {
      coproc::detail::futex_wait(w.ping, seen);
      v = w.ping.load(std::memory_order_acquire);
    }
    if (v == stop_value) {
      _exit(0);
    }
    seen = v;
    w.pong.store(v, std::memory_order_release);
    const auto mode = static_cast<bell>(w.mode.load(std::memory_order_relaxed));
    if (mode == bell::eventfd_wait || mode == bell::eventfd_read) {
      const std::uint64_t one = 1;
      if (::write(efd, &one, sizeof one) != sizeof one) {
        _exit(3);
      }
    } else {
      coproc::detail::futex_wake(w.pong);
    }
  }
}

void ring_child(shared_words& w, std::uint32_t i) {
  w.ping.store(i, std::memory_order_release);
  coproc::detail::futex_wake(w.ping);
}

// One batch of n round trips with the given doorbell; fills us[k] with the
// k-th round trip in microseconds.
asio::awaitable<void> batch(shared_words& w, asio::posix::stream_descriptor& efd, bell mode,
                            std::uint32_t& seq, std::vector<double>& us) {
  auto ex = co_await asio::this_coro::executor;
  w.mode.store(static_cast<std::uint32_t>(mode), std::memory_order_relaxed);
  std::array<char, 16> buf{};
  for (double& sample : us) {
    const std::uint32_t i = ++seq;
    const auto t0 = clock_type::now();
    ring_child(w, i);
    for (;;) {
      const std::uint32_t v = w.pong.load(std::memory_order_acquire);
      if (v == i) {
        break;
      }
      switch (mode) {
        case bell::eventfd_wait: {
          co_await efd.async_wait(asio::posix::descriptor_base::wait_read, asio::use_awaitable);
          std::uint64_t count = 0;
          // Non-blocking: EAGAIN only if someone else reset it (no one does).
          (void)::read(efd.native_handle(), &count, sizeof count);
          break;
        }
        case bell::eventfd_read:
          // 8 bytes into 16 reads as "exhausted": the next read is queued
          // without a speculative syscall.
          co_await efd.async_read_some(asio::buffer(buf), asio::use_awaitable);
          break;
        case bell::ring_futex:
          co_await coproc::async_futex_wait(ex, w.pong, v, asio::use_awaitable);
          break;
        case bell::blocking_futex:
          coproc::detail::futex_wait(w.pong, v);
          break;
      }
    }
    sample = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
  }
}

void run_batch(asio::io_context& ctx, shared_words& w, asio::posix::stream_descriptor& efd,
               bell mode, std::uint32_t& seq, std::vector<double>& us) {
  std::exception_ptr error;
  asio::co_spawn(ctx, batch(w, efd, mode, seq, us), [&](std::exception_ptr e) { error = e; });
  ctx.restart();
  ctx.run();
  if (error) {
    std::rethrow_exception(error);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double percentile_sorted(const std::vector<double>& v, double q) {
  const auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct rep_figures {
  std::vector<double> mean, p50, p99;
};

std::string fmt(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

void run_placement(bool cpu0, int n, int reps) {
  set_placement(cpu0);  // before the fork: the child inherits it
  void* mem = mmap(nullptr, sizeof(shared_words), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    die("mmap");
  }
  auto* w = new (mem) shared_words;
  const int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    die("eventfd");
  }
  const pid_t pid = fork();
  if (pid < 0) {
    die("fork");
  }
  if (pid == 0) {
    child_loop(*w, efd);
  }

  asio::io_context ctx;
  asio::posix::stream_descriptor desc(ctx, efd);  // owns efd from here
  const bool ring_futex = coproc::uring_service::of(ctx.get_executor()).has_futex_wait();
  std::uint32_t seq = 0;
  std::vector<double> us(static_cast<std::size_t>(n));
  // Warm-up: every doorbell once, a tenth of a batch.
  {
    std::vector<double> warm(static_cast<std::size_t>(std::max(n / 10, 1)));
    for (bell b : bells) {
      if (only >= 0 && static_cast<int>(b) != only) {
        continue;
      }
      run_batch(ctx, *w, desc, b, seq, warm);
    }
  }
  std::array<rep_figures, bells.size()> figs;
  for (int r = 0; r < reps; ++r) {
    for (std::size_t k = 0; k < bells.size(); ++k) {
      const std::size_t b = (k + static_cast<std::size_t>(r)) % bells.size();
      if (only >= 0 && static_cast<int>(b) != only) {
        continue;
      }
      run_batch(ctx, *w, desc, bells[b], seq, us);
      double sum = 0;
      for (double x : us) {
        sum += x;
      }
      std::vector<double> sorted = us;
      std::sort(sorted.begin(), sorted.end());
      figs[b].mean.push_back(sum / static_cast<double>(n));
      figs[b].p50.push_back(percentile_sorted(sorted, 0.5));
      figs[b].p99.push_back(percentile_sorted(sorted, 0.99));
    }
  }
  w->ping.store(stop_value, std::memory_order_release);
  coproc::detail::futex_wake(w->ping);
  int status = 0;
  waitpid(pid, &status, 0);
  munmap(mem, sizeof(shared_words));

  const char* place = cpu0 ? "cpu0" : "free";
  for (std::size_t b = 0; b < bells.size(); ++b) {
    const auto& f = figs[b];
    if (f.p50.empty()) {
      continue;
    }
    // The value is the per-repetition p50 (median over repetitions): on a
    // shared machine a few preemptions of milliseconds move the mean more
    // than the doorbell does. min/max are those of the per-repetition p50.
    const auto [lo, hi] = std::minmax_element(f.p50.begin(), f.p50.end());
    const bool limit = bells[b] == bell::blocking_futex;
    std::printf(
        "{\"metric\": \"doorbell_rtt_%s\", \"contender\": \"%s\", \"value\": %s, \"unit\": "
        "\"us\", \"better\": \"lower\", \"kind\": \"%s\", \"mean\": %s, \"p99\": %s, "
        "\"min\": %s, \"max\": %s, \"round_trips\": %d, \"inner_reps\": %d, "
        "\"uring_futex_wait\": %s}\n",
        place, name_of(bells[b]), fmt(median(f.p50)).c_str(), limit ? "limit" : "coproc",
        fmt(median(f.mean)).c_str(), fmt(median(f.p99)).c_str(), fmt(*lo).c_str(), fmt(*hi).c_str(),
        n, reps, ring_futex ? "true" : "false");
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view group = argc > 1 ? argv[1] : "";
  bool quick = false;
  for (int i = 2; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--quick") {
      quick = true;
    } else if (std::string_view(argv[i]) == "--only" && i + 1 < argc) {
      only = std::atoi(argv[++i]);  // for strace -c of one doorbell
    } else {
      std::fprintf(stderr, "bench_doorbell: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (group != "doorbell") {
    std::fprintf(stderr, "usage: bench_doorbell doorbell [--quick]\n");
    return 2;
  }
  const int n = quick ? 2'000 : 20'000;
  const int reps = quick ? 3 : 5;
  try {
    run_placement(true, n, reps);
    run_placement(false, n, reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_doorbell: %s\n", e.what());
    return 1;
  }
  return 0;
}
