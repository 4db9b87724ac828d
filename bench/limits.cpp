// bench_limits: what the hardware and kernel allow, measured with raw system
// calls and no library in the way. bench/run.py puts these figures next to
// coproc and its Python peers as the "limit" column of each row.
//
//   bench_limits GROUP [--quick] [--cpu0]
//
// GROUP is one of rtt, tput, payload, speedup, ready, memory, queue, pipe.
// --cpu0 pins the whole program (and so every forked child) to CPU 0 first;
// bench/run.py instead pins the process before exec, which has the same effect.
// Output: one JSON object per line, the protocol described in bench/run.py.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "json_lines.hpp"

namespace {

using bench::emit;
using bench::emit_latency;
using bench::fmt_double;
using bench::percentile;

using clock_type = std::chrono::steady_clock;

bool quick = false;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) {
    die("sched_getaffinity");
  }
  return CPU_COUNT(&set);
}

// Spinning while the peer shares our only CPU would measure the scheduler's
// time slice, not the handoff, so spin loops yield when there is one CPU.
// With more CPUs they still yield every 1024 polls (some 10-40 us): on a
// machine with other work, a peer preempted on this CPU then runs again
// within that time instead of after a whole time slice of spinning, and a
// peer that answers at once never sees the yield.
void relax() {
  static const bool single = allowed_cpus() == 1;
  static thread_local unsigned polls = 0;
  if (single || ++polls % 1024 == 0) {
    sched_yield();
  } else {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

// Anonymous MAP_SHARED memory survives fork and is the same pages in both.
void* shared_map(std::size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    die("mmap");
  }
  return p;
}

// Forks w children; child k runs body(k), then exits. Returns their pids.
std::vector<pid_t> fork_children(int w, const std::function<void(int)>& body) {
  std::vector<pid_t> pids;
  for (int k = 0; k < w; ++k) {
    const pid_t pid = fork();
    if (pid < 0) {
      die("fork");
    }
    if (pid == 0) {
      body(k);
      _exit(0);
    }
    pids.push_back(pid);
  }
  return pids;
}

// Runs child_fn in a forked child, parent_fn here, then reaps the child.
void with_child(const std::function<void()>& child_fn, const std::function<void()>& parent_fn) {
  const pid_t pid = fork_children(1, [&](int) { child_fn(); }).front();
  parent_fn();
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) {
    die("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "bench_limits: child failed (status %d)\n", status);
    std::exit(1);
  }
}

void write_all(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t r = write(fd, p, n);
    if (r < 0) {
      die("write");
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Reads exactly n bytes. On a non-blocking fd (a polling reader) it spins
// through EAGAIN; a blocking fd sleeps in read() instead.
void read_all(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EAGAIN) {
      relax();
      continue;
    }
    if (r <= 0) {
      die("read");
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

struct fd_pair {
  int rd = -1;
  int wr = -1;
};

fd_pair make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    die("pipe2");
  }
  return {fds[0], fds[1]};
}

// ---- round trips between two processes ------------------------------------

// How a pipe ping-pong waits for its peer's bytes: asleep in read(), or
// polling a non-blocking read end (the floor for a receiver that spins before
// it sleeps, as coproc::connection does).
enum class pipe_wait { block, poll };

// Pins the calling process to `cpu` (ignored when negative).
void pin(int cpu) {
  if (cpu < 0) {
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    die("sched_setaffinity");
  }
}

struct pingpong_options {
  std::size_t bytes = 1;
  pipe_wait wait = pipe_wait::block;
  int parent_cpu = -1;  // both -1: wherever the scheduler puts them
  int child_cpu = -1;
};

// Round trips of `bytes` over two pipes: the parent writes, the child reads
// all of it and writes it back.
std::vector<double> pipe_pingpong(int n, pingpong_options o = {}) {
  const fd_pair to_child = make_pipe();
  const fd_pair to_parent = make_pipe();
  if (o.wait == pipe_wait::poll) {
    fcntl(to_child.rd, F_SETFL, O_NONBLOCK);
    fcntl(to_parent.rd, F_SETFL, O_NONBLOCK);
  }
  cpu_set_t saved;
  sched_getaffinity(0, sizeof saved, &saved);
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  with_child(
      [&] {
        pin(o.child_cpu);
        std::vector<char> buf(o.bytes);
        for (int i = 0; i < n; ++i) {
          read_all(to_child.rd, buf.data(), o.bytes);
          write_all(to_parent.wr, buf.data(), o.bytes);
        }
      },
      [&] {
        pin(o.parent_cpu);
        std::vector<char> buf(o.bytes, 'x');
        for (int i = 0; i < n; ++i) {
          const auto t0 = clock_type::now();
          write_all(to_child.wr, buf.data(), o.bytes);
          read_all(to_parent.rd, buf.data(), o.bytes);
          us.push_back(seconds_since(t0) * 1e6);
        }
      });
  sched_setaffinity(0, sizeof saved, &saved);
  for (int fd : {to_child.rd, to_child.wr, to_parent.rd, to_parent.wr}) {
    close(fd);
  }
  return us;
}

std::vector<double> eventfd_pingpong(int n) {
  const int to_child = eventfd(0, EFD_CLOEXEC);
  const int to_parent = eventfd(0, EFD_CLOEXEC);
  if (to_child < 0 || to_parent < 0) {
    die("eventfd");
  }
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  with_child(
      [&] {
        std::uint64_t v;
        for (int i = 0; i < n; ++i) {
          read_all(to_child, &v, sizeof v);
          write_all(to_parent, &v, sizeof v);
        }
      },
      [&] {
        std::uint64_t v = 1;
        for (int i = 0; i < n; ++i) {
          const auto t0 = clock_type::now();
          write_all(to_child, &v, sizeof v);
          read_all(to_parent, &v, sizeof v);
          us.push_back(seconds_since(t0) * 1e6);
        }
      });
  close(to_child);
  close(to_parent);
  return us;
}

// Shared (not FUTEX_PRIVATE) operations: the word lives in MAP_SHARED memory.
void futex_wait(std::atomic<std::uint32_t>* w, std::uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), FUTEX_WAIT, expected, nullptr, nullptr,
          0);
}

void futex_wake(std::atomic<std::uint32_t>* w) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// The word counts up: the parent publishes odd values, the child even ones.
void await_value(std::atomic<std::uint32_t>* w, std::uint32_t want, bool spin) {
  for (;;) {
    const std::uint32_t v = w->load(std::memory_order_acquire);
    if (v == want) {
      return;
    }
    if (spin) {
      relax();
    } else {
      futex_wait(w, v);
    }
  }
}

std::vector<double> word_pingpong(int n, bool spin) {
  auto* w = new (shared_map(4096)) std::atomic<std::uint32_t>(0);
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  with_child(
      [&] {
        for (int i = 0; i < n; ++i) {
          const auto k = static_cast<std::uint32_t>(2 * i);
          await_value(w, k + 1, spin);
          w->store(k + 2, std::memory_order_release);
          if (!spin) {
            futex_wake(w);
          }
        }
      },
      [&] {
        for (int i = 0; i < n; ++i) {
          const auto k = static_cast<std::uint32_t>(2 * i);
          const auto t0 = clock_type::now();
          w->store(k + 1, std::memory_order_release);
          if (!spin) {
            futex_wake(w);
          }
          await_value(w, k + 2, spin);
          us.push_back(seconds_since(t0) * 1e6);
        }
      });
  munmap(w, 4096);
  return us;
}

void group_rtt() {
  const int n = quick ? 500 : 10000;
  emit_latency("rtt", "pipe ping-pong", pipe_pingpong(n));
  emit_latency("rtt", "eventfd ping-pong", eventfd_pingpong(n));
  emit_latency("rtt", "futex ping-pong", word_pingpong(n, false));
  if (allowed_cpus() > 1) {
    emit_latency("rtt", "shm spin ping-pong", word_pingpong(n, true));
  }
}

// ---- throughput through shared-memory rings --------------------------------

// A bounded SPSC ring of Capacity items; head and tail on their own cache lines.
template <class T, std::uint64_t Capacity>
struct spsc_ring {
  alignas(64) std::atomic<std::uint64_t> head{0};  // next to pop (consumer)
  alignas(64) std::atomic<std::uint64_t> tail{0};  // next to push (producer)
  alignas(64) T slots[Capacity];

  bool try_push(const T& v) {
    const auto t = tail.load(std::memory_order_relaxed);
    if (t - head.load(std::memory_order_acquire) == Capacity) {
      return false;
    }
    slots[t % Capacity] = v;
    tail.store(t + 1, std::memory_order_release);
    return true;
  }
  bool try_pop(T& v) {
    const auto h = head.load(std::memory_order_relaxed);
    if (h == tail.load(std::memory_order_acquire)) {
      return false;
    }
    v = slots[h % Capacity];
    head.store(h + 1, std::memory_order_release);
    return true;
  }
};

using item_ring = spsc_ring<std::uint64_t, 1024>;

// Items/s of a request ring and a reply ring with `window` items in flight,
// both sides spinning: the floor under a task round trip with no work in it.
double ring_echo_rate(std::uint64_t n, std::uint64_t window) {
  void* mem = shared_map(2 * sizeof(item_ring));
  auto* req = new (mem) item_ring;
  auto* rep = new (static_cast<char*>(mem) + sizeof(item_ring)) item_ring;
  double secs = 0;
  with_child(
      [&] {
        std::uint64_t v;
        for (std::uint64_t i = 0; i < n; ++i) {
          while (!req->try_pop(v)) {
            relax();
          }
          while (!rep->try_push(v)) {
            relax();
          }
        }
      },
      [&] {
        const auto t0 = clock_type::now();
        std::uint64_t sent = 0;
        std::uint64_t done = 0;
        std::uint64_t v;
        while (done < n) {
          bool progress = false;
          while (sent < n && sent - done < window && req->try_push(sent)) {
            ++sent;
            progress = true;
          }
          while (rep->try_pop(v)) {
            ++done;
            progress = true;
          }
          if (!progress) {
            relax();
          }
        }
        secs = seconds_since(t0);
      });
  munmap(mem, 2 * sizeof(item_ring));
  return static_cast<double>(n) / secs;
}

// Items/s one way through one ring of T (a queue's producer to its consumer).
template <class T, std::uint64_t Capacity>
double ring_oneway_rate(std::uint64_t n) {
  using ring_type = spsc_ring<T, Capacity>;
  auto* ring = new (shared_map(sizeof(ring_type))) ring_type;
  double secs = 0;
  with_child(
      [&] {
        T item{};
        for (std::uint64_t i = 0; i < n; ++i) {
          std::memcpy(&item, &i, sizeof i);
          while (!ring->try_push(item)) {
            relax();
          }
        }
      },
      [&] {
        const auto t0 = clock_type::now();
        T item;
        for (std::uint64_t i = 0; i < n; ++i) {
          while (!ring->try_pop(item)) {
            relax();
          }
        }
        secs = seconds_since(t0);
      });
  munmap(ring, sizeof(ring_type));
  return static_cast<double>(n) / secs;
}

// The map limit: the input and output arrays live in shared memory, so no
// byte is copied twice. The parent writes chunks of map_chunk items (the copy
// any map needs to hand its input over) and publishes their count; child k of
// w calls the task function on chunks k, k + w, ..., as a pool's map calls it
// per item, and counts the chunks it finished; the parent copies the output
// back. Spinning throughout: the fastest a map of no-op tasks can go here.
[[gnu::noinline]] std::uint64_t noop_task(std::uint64_t v) {
  return v;
}
std::uint64_t (*volatile noop_task_ptr)(std::uint64_t) = noop_task;

constexpr std::uint64_t map_chunk = 16 * 1024;

struct map_board {
  alignas(64) std::atomic<std::uint64_t> published{0};      // chunks written by the parent
  alignas(64) std::atomic<std::uint64_t> finished[8] = {};  // per child, 8 bytes apart is fine
};

double shared_map_rate(std::uint64_t n, int w) {
  const std::uint64_t chunks = (n + map_chunk - 1) / map_chunk;
  const std::size_t bytes = sizeof(map_board) + 2 * n * sizeof(std::uint64_t);
  void* mem = shared_map(bytes);
  auto* board = new (mem) map_board;
  auto* in = reinterpret_cast<std::uint64_t*>(static_cast<char*>(mem) + sizeof(map_board));
  std::uint64_t* out = in + n;
  std::memset(in, 0, 2 * n * sizeof(std::uint64_t));  // fault the pages in before timing
  const std::vector<pid_t> kids = fork_children(w, [&](int k) {
    const auto fn = noop_task_ptr;
    for (auto c = static_cast<std::uint64_t>(k); c < chunks; c += static_cast<std::uint64_t>(w)) {
      while (board->published.load(std::memory_order_acquire) <= c) {
        relax();
      }
      const std::uint64_t end = std::min(n, (c + 1) * map_chunk);
      for (std::uint64_t i = c * map_chunk; i < end; ++i) {
        out[i] = fn(in[i]);
      }
      board->finished[k].fetch_add(1, std::memory_order_release);
    }
  });
  std::vector<std::uint64_t> src(n);
  std::vector<std::uint64_t> dst(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    src[i] = i;
  }
  const auto t0 = clock_type::now();
  for (std::uint64_t c = 0; c < chunks; ++c) {
    const std::uint64_t first = c * map_chunk;
    const std::uint64_t count = std::min(map_chunk, n - first);
    std::memcpy(in + first, src.data() + first, count * sizeof(std::uint64_t));
    board->published.store(c + 1, std::memory_order_release);
  }
  for (;;) {
    std::uint64_t done = 0;
    for (int k = 0; k < w; ++k) {
      done += board->finished[k].load(std::memory_order_acquire);
    }
    if (done == chunks) {
      break;
    }
    relax();
  }
  std::memcpy(dst.data(), out, n * sizeof(std::uint64_t));
  const double secs = seconds_since(t0);
  for (const pid_t pid : kids) {
    waitpid(pid, nullptr, 0);
  }
  munmap(mem, bytes);
  if (dst[n - 1] != n - 1) {
    std::fprintf(stderr, "bench_limits: the shared map lost items\n");
    std::exit(1);
  }
  return static_cast<double>(n) / secs;
}

void group_tput() {
  const std::uint64_t n = quick ? 100'000 : 1'000'000;
  const double rate = ring_echo_rate(n, 256);
  emit("noop_tput_submit", "shm ring echo (spin, 256 in flight)", rate, "tasks/s", "higher");
  // The same count as bench_pool's map; the best of a few runs (one run is
  // a few milliseconds, where one descheduled child shows).
  const int w = std::min(allowed_cpus(), 8);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    best = std::max(best, shared_map_rate(n, w));
  }
  emit("noop_tput_map", "map over shared arrays (spin, " + std::to_string(w) + " processes)", best,
       "tasks/s", "higher");
}

// ---- payloads ---------------------------------------------------------------

double memcpy_gbps(std::size_t bytes, int reps) {
  std::vector<char> src(bytes, 1);
  std::vector<char> dst(bytes, 2);
  std::vector<double> secs;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = clock_type::now();
    std::memcpy(dst.data(), src.data(), bytes);
    asm volatile("" : : "r"(dst.data()) : "memory");
    secs.push_back(seconds_since(t0));
  }
  std::sort(secs.begin(), secs.end());
  return static_cast<double>(bytes) / secs[secs.size() / 2] / 1e9;
}

const char* size_name(std::size_t bytes) {
  switch (bytes) {
    case 8:
      return "8B";
    case 4096:
      return "4KiB";
    case 1 << 20:
      return "1MiB";
    case 64 << 20:
      return "64MiB";
    default:
      return "?";
  }
}

constexpr std::size_t payload_sizes[] = {8, 4096, 1 << 20, 64 << 20};

int payload_iterations(std::size_t bytes) {
  if (bytes >= (64u << 20)) {
    return quick ? 2 : 10;
  }
  if (bytes >= (1u << 20)) {
    return quick ? 20 : 200;
  }
  return quick ? 200 : 5000;
}

// A handoff word for a waiter that spins for a bounded time, then sleeps on
// the futex; the waker issues FUTEX_WAKE only when the waiter said it sleeps.
// Pure spinning would measure the scheduler whenever the peer is descheduled
// (the machine is shared), pure futex the wake-up of an idle CPU.
struct handoff {
  std::atomic<std::uint32_t> value{0};
  std::atomic<std::uint32_t> sleeping[2] = {0, 0};  // per side: 0 parent, 1 child
  // Polls before sleeping. Spinning pays only while the peer has a core of
  // its own: on a loaded machine a spinner burns its slice (20000 polls, about
  // 1 ms) while the peer waits for that very core, so both are measured.
  int spins = 20000;

  void publish(std::uint32_t v, int peer) {
    value.store(v, std::memory_order_seq_cst);
    if (sleeping[peer].load(std::memory_order_seq_cst) != 0) {
      futex_wake(&value);
    }
  }
  void await(std::uint32_t want, int me) {
    for (int i = 0; i < spins; ++i) {
      if (value.load(std::memory_order_acquire) == want) {
        return;
      }
      relax();
    }
    for (;;) {
      sleeping[me].store(1, std::memory_order_seq_cst);
      const std::uint32_t v = value.load(std::memory_order_seq_cst);
      if (v == want) {
        break;
      }
      futex_wait(&value, v);
    }
    sleeping[me].store(0, std::memory_order_relaxed);
  }
};

// The floor of a by-value round trip through shared memory: copy in, the
// peer copies out and back, copy out; handoffs spin, then sleep.
void group_payload() {
  emit("memcpy_64MiB", "memcpy", memcpy_gbps(64u << 20, quick ? 3 : 10), "GB/s", "higher");
  const std::size_t max = 64u << 20;
  auto* word = new (shared_map(4096)) handoff;
  char* shm = static_cast<char*>(shared_map(max));
  std::memset(shm, 0, max);
  for (const int spins : {20000, 0}) {
    word->spins = spins;
    const char* label =
        spins ? "shm copy in/out (4 memcpy, spin then futex)" : "shm copy in/out (4 memcpy, futex)";
    for (const std::size_t bytes : payload_sizes) {
      const int n = payload_iterations(bytes);
      std::vector<double> us;
      word->value.store(0);
      with_child(
          [&] {
            std::vector<char> priv(bytes);
            for (int i = 0; i < n; ++i) {
              const auto k = static_cast<std::uint32_t>(2 * i);
              word->await(k + 1, 1);
              std::memcpy(priv.data(), shm, bytes);
              std::memcpy(shm, priv.data(), bytes);
              word->publish(k + 2, 0);
            }
          },
          [&] {
            std::vector<char> src(bytes, 7);
            std::vector<char> dst(bytes, 0);
            for (int i = 0; i < n; ++i) {
              const auto k = static_cast<std::uint32_t>(2 * i);
              const auto t0 = clock_type::now();
              std::memcpy(shm, src.data(), bytes);
              word->publish(k + 1, 1);
              word->await(k + 2, 0);
              std::memcpy(dst.data(), shm, bytes);
              us.push_back(seconds_since(t0) * 1e6);
            }
          });
      std::sort(us.begin(), us.end());
      emit(std::string("payload_rtt_") + size_name(bytes), label, percentile(us, 0.5), "us",
           "lower");
    }
  }
  munmap(shm, max);
  munmap(word, 4096);
}

// ---- CPU-bound speedup -----------------------------------------------------

// A loop the optimiser cannot remove or vectorise away. Never inlined, and
// called through burn_ptr (read at run time) in the serial reference and in
// the forked processes alike, so both run the very same code.
[[gnu::noinline]] std::uint64_t burn(std::uint64_t iters) {
  std::uint64_t x = 88172645463325252ull;
  for (std::uint64_t i = 0; i < iters; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

using burn_fn = std::uint64_t (*)(std::uint64_t);
burn_fn volatile burn_ptr = burn;

// Runs tasks first..tasks step `step` through fn; returns a value that
// depends on every call.
std::uint64_t burn_tasks(burn_fn fn, int first, int tasks, int step, std::uint64_t iters) {
  std::uint64_t acc = 0;
  for (int t = first; t < tasks; t += step) {
    acc ^= fn(iters);
  }
  return acc;
}

double serial_seconds(burn_fn fn, int tasks, std::uint64_t iters) {
  const auto t0 = clock_type::now();
  volatile std::uint64_t sink = burn_tasks(fn, 0, tasks, 1, iters);
  (void)sink;
  return seconds_since(t0);
}

// The tasks spread over w forked processes (task k, k+w, ...), from the
// first fork to the last reap.
double forked_seconds(burn_fn fn, int w, int tasks, std::uint64_t iters) {
  const auto t0 = clock_type::now();
  const std::vector<pid_t> pids = fork_children(w, [&](int k) {
    volatile std::uint64_t sink = burn_tasks(fn, k, tasks, w, iters);
    (void)sink;
  });
  for (const pid_t pid : pids) {
    waitpid(pid, nullptr, 0);
  }
  return seconds_since(t0);
}

// Serial and forked runs back to back in each repetition (order
// alternating), so load from other processes hits both sides of each ratio
// alike; the value is the median of the per-repetition ratios.
void group_speedup() {
  const int cpus = allowed_cpus();
  const int tasks = 4 * cpus;
  const int reps = quick ? 3 : 7;
  // One run (all tasks) takes about 80 ms serially (20 ms quick).
  const double task_s = (quick ? 0.020 : 0.080) / tasks;
  const burn_fn fn = burn_ptr;
  std::uint64_t iters = 1 << 16;
  for (;;) {
    double s = serial_seconds(fn, 1, iters);
    if (s > task_s / 4) {
      // The fastest of a few samples: one slowed by other load would make
      // the tasks far shorter than asked.
      for (int k = 0; k < 3; ++k) {
        s = std::min(s, serial_seconds(fn, 1, iters));
      }
      iters = static_cast<std::uint64_t>(static_cast<double>(iters) * task_s / s);
      break;
    }
    iters *= 2;
  }
  for (int w = 1; w <= cpus; ++w) {
    std::vector<double> ratio;
    std::vector<double> serial;
    std::vector<double> parallel;
    for (int r = 0; r < reps; ++r) {
      double s = r % 2 == 0 ? serial_seconds(fn, tasks, iters) : 0;
      const double p = forked_seconds(fn, w, tasks, iters);
      if (r % 2 == 1) {
        s = serial_seconds(fn, tasks, iters);
      }
      ratio.push_back(s / p);
      serial.push_back(s);
      parallel.push_back(p);
    }
    auto med = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const auto [lo, hi] = std::minmax_element(ratio.begin(), ratio.end());
    emit("speedup_w" + std::to_string(w), "fork w processes (C++)", med(ratio), "x", "higher",
         ", \"tasks\": " + std::to_string(tasks) + ", \"inner_reps\": " + std::to_string(reps) +
             ", \"ratio_min\": " + fmt_double(*lo) + ", \"ratio_max\": " + fmt_double(*hi) +
             ", \"serial_ms\": " + fmt_double(med(serial) * 1e3) +
             ", \"parallel_ms\": " + fmt_double(med(parallel) * 1e3));
  }
}

// ---- process creation and memory ------------------------------------------

void group_ready() {
  const int n = quick ? 20 : 200;
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    const auto t0 = clock_type::now();
    const pid_t pid = fork();
    if (pid < 0) {
      die("fork");
    }
    if (pid == 0) {
      _exit(0);
    }
    waitpid(pid, nullptr, 0);
    ms.push_back(seconds_since(t0) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  emit("ready_ms", "fork+_exit+waitpid", percentile(ms, 0.5), "ms", "lower");
}

// kB values of "Pss:" and "Private_Dirty:" in /proc/PID/smaps_rollup.
std::pair<double, double> smaps_rollup(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  double pss = -1;
  double dirty = -1;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    double kb = 0;
    fields >> key >> kb;
    if (key == "Pss:") {
      pss = kb;
    } else if (key == "Private_Dirty:") {
      dirty = kb;
    }
  }
  return {pss, dirty};
}

void group_memory() {
  const fd_pair ready = make_pipe();
  const fd_pair release = make_pipe();
  const pid_t pid = fork();
  if (pid < 0) {
    die("fork");
  }
  if (pid == 0) {
    char c = 'r';
    write_all(ready.wr, &c, 1);
    read_all(release.rd, &c, 1);
    _exit(0);
  }
  char c;
  read_all(ready.rd, &c, 1);
  const auto [pss, dirty] = smaps_rollup(pid);
  write_all(release.wr, &c, 1);
  waitpid(pid, nullptr, 0);
  emit("idle_worker_pss", "forked idle C++ process", pss / 1024, "MiB", "lower");
  emit("idle_worker_private_dirty", "forked idle C++ process", dirty / 1024, "MiB", "lower");
}

// ---- queue and pipe rows ---------------------------------------------------

struct page {
  char bytes[4096];
};

void group_queue() {
  const std::uint64_t n = quick ? 100'000 : 2'000'000;
  emit("queue_tput", "shm SPSC ring (spin)", ring_oneway_rate<std::uint64_t, 1024>(n), "items/s",
       "higher");
  emit("queue_tput_4KiB", "shm SPSC ring of 4 KiB slots (spin)", ring_oneway_rate<page, 64>(n / 10),
       "items/s", "higher");
  const int rtts = quick ? 500 : 5000;
  std::vector<double> us = word_pingpong(rtts, false);
  std::sort(us.begin(), us.end());
  emit("queue_rtt_p50", "futex ping-pong", percentile(us, 0.5), "us", "lower");
  if (allowed_cpus() > 1) {
    us = word_pingpong(rtts, true);
    std::sort(us.begin(), us.end());
    emit("queue_rtt_p50", "shm spin ping-pong", percentile(us, 0.5), "us", "lower");
  }
}

// Round trips of `o.bytes` over raw pipes: p50 (and p99) under `metric`.
void emit_pipe_rtt(const std::string& metric, const std::string& contender, int n,
                   pingpong_options o, bool with_p99) {
  std::vector<double> us = pipe_pingpong(n, o);
  std::sort(us.begin(), us.end());
  emit(metric + "_p50", contender, percentile(us, 0.5), "us", "lower");
  if (with_p99) {
    emit(metric + "_p99", contender, percentile(us, 0.99), "us", "lower");
  }
}

// A private anonymous mapping advised for transparent huge pages (as coproc
// does for large buffers): fewer page faults and TLB misses for big copies.
char* huge_buffer(std::size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    die("mmap");
  }
  madvise(p, bytes, MADV_HUGEPAGE);
  std::memset(p, 'b', bytes);
  return static_cast<char*>(p);
}

// One 64 MiB message through a raw pipe: write() in a child, read() here,
// milliseconds per message (median), after a one-byte "go" from the parent.
// Both buffers are huge-page memory touched before the first message.
// pipe_wait::poll: the reader polls a non-blocking read end, so the writer
// never has to wake it (what a receiver that spins does).
double pipe_big_message_ms(int reps, pipe_wait wait) {
  const std::size_t bytes = std::size_t{64} << 20;
  const fd_pair go = make_pipe();
  const fd_pair data = make_pipe();
  if (wait == pipe_wait::poll) {
    fcntl(data.rd, F_SETFL, O_NONBLOCK);
  }
  char* big = huge_buffer(bytes);
  char* got = huge_buffer(bytes);
  std::vector<double> ms;
  with_child(
      [&] {
        char c;
        for (int i = 0; i < reps; ++i) {
          read_all(go.rd, &c, 1);
          write_all(data.wr, big, bytes);
        }
      },
      [&] {
        char c = 'g';
        for (int i = 0; i < reps; ++i) {
          const auto t0 = clock_type::now();
          write_all(go.wr, &c, 1);
          read_all(data.rd, got, bytes);
          ms.push_back(seconds_since(t0) * 1e3);
        }
      });
  for (int fd : {go.rd, go.wr, data.rd, data.wr}) {
    close(fd);
  }
  munmap(big, bytes);
  munmap(got, bytes);
  std::sort(ms.begin(), ms.end());
  return percentile(ms, 0.5);
}

void group_pipe() {
  const int n = quick ? 500 : 5000;
  const bool cpus2 = allowed_cpus() > 1;
  emit_pipe_rtt("pipe_rtt", "raw pipe ping-pong (1 B)", n, {}, true);
  if (cpus2) {
    emit_pipe_rtt("pipe_rtt", "raw pipe ping-pong, polling read (1 B)", n,
                  {.wait = pipe_wait::poll}, true);
  }
  emit_pipe_rtt("pipe_rtt_4KiB", "raw pipe ping-pong (4 KiB)", n, {.bytes = 4096}, false);
  if (cpus2) {
    emit_pipe_rtt("pipe_rtt_4KiB", "raw pipe ping-pong, polling read (4 KiB)", n,
                  {.bytes = 4096, .wait = pipe_wait::poll}, false);
    emit_pipe_rtt("pipe_rtt_cross_cpu", "raw pipe ping-pong, CPUs 0|1 (1 B)", n,
                  {.parent_cpu = 0, .child_cpu = 1}, false);
    emit_pipe_rtt("pipe_rtt_cross_cpu", "raw pipe ping-pong, CPUs 0|1, polling read (1 B)", n,
                  {.wait = pipe_wait::poll, .parent_cpu = 0, .child_cpu = 1}, false);
  }
  emit("pipe_64MiB_ms", "raw pipe, one 64 MiB write/read (huge pages)",
       pipe_big_message_ms(quick ? 2 : 5, pipe_wait::block), "ms", "lower");
  if (cpus2) {
    emit("pipe_64MiB_ms", "raw pipe, one 64 MiB write/polling read (huge pages)",
         pipe_big_message_ms(quick ? 2 : 5, pipe_wait::poll), "ms", "lower");
  }
  // One way, 8-byte messages, each its own write and read.
  const int msgs = quick ? 20'000 : 200'000;
  const fd_pair p = make_pipe();
  double secs = 0;
  with_child(
      [&] {
        std::uint64_t v = 0;
        for (int i = 0; i < msgs; ++i) {
          write_all(p.wr, &v, sizeof v);
        }
      },
      [&] {
        const auto t0 = clock_type::now();
        std::uint64_t v;
        for (int i = 0; i < msgs; ++i) {
          read_all(p.rd, &v, sizeof v);
        }
        secs = seconds_since(t0);
      });
  close(p.rd);
  close(p.wr);
  emit("pipe_tput", "raw pipe, 8 B per write/read", msgs / secs, "msgs/s", "higher");
}

}  // namespace

int main(int argc, char** argv) {
  std::string group = argc > 1 ? argv[1] : "";
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--cpu0") {
      pin(0);
    } else {
      std::fprintf(stderr, "bench_limits: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const std::pair<const char*, void (*)()> groups[] = {
      {"rtt", group_rtt},         {"tput", group_tput},   {"payload", group_payload},
      {"speedup", group_speedup}, {"ready", group_ready}, {"memory", group_memory},
      {"queue", group_queue},     {"pipe", group_pipe},
  };
  for (const auto& [name, fn] : groups) {
    if (group == name) {
      fn();
      return 0;
    }
  }
  std::fprintf(stderr,
               "usage: bench_limits rtt|tput|payload|speedup|ready|memory|queue|pipe "
               "[--quick] [--cpu0]\n");
  return 2;
}
