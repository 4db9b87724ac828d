// coproc's main demo (`./x demo`): count the primes below N by trial division,
// first serially in this process, then fanned out over a process_pool with a
// live progress bar, and print the speedup. In a third pass the demo kills one
// busy worker with SIGKILL while the job runs: only the chunk that worker held
// fails (errc::worker_crashed) and is submitted again; every other chunk is
// unaffected and the total is still exact. Last, one long task counts a
// quarter of the range alone and streams its own progress (pool.stream): the
// bar is drawn from the records it emits while it runs.
//
//   primes_demo [--workers N] [--size small|medium|large|NUMBER] [--chunks N]
//               [--no-kill] [--help]

#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cinttypes>
#include <coproc/coproc.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

// The CPU-heavy job: a chunk [lo, hi) of the range, counted by trial division.
std::uint64_t count_primes(std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t count = 0;
  for (std::uint64_t n = std::max<std::uint64_t>(lo, 2); n < hi; ++n) {
    bool prime = n == 2 || n == 3 || (n % 2 != 0 && n % 3 != 0);
    for (std::uint64_t d = 5; prime && d * d <= n; d += 6) {
      prime = n % d != 0 && n % (d + 2) != 0;
    }
    count += prime ? 1 : 0;
  }
  return count;
}

// What a worker runs: count_primes, with the thread's name set to "primes-chunk"
// while it counts (visible in ps and top, and in /proc/PID/comm). The demo reads
// it to pick a worker that is inside a chunk for its SIGKILL.
std::uint64_t count_chunk(std::uint64_t lo, std::uint64_t hi) {
  char name[16] = {};
  ::prctl(PR_GET_NAME, name);
  ::prctl(PR_SET_NAME, "primes-chunk");
  std::uint64_t n = count_primes(lo, hi);
  ::prctl(PR_SET_NAME, name);
  return n;
}

struct options {
  std::size_t workers = std::max(1u, std::thread::hardware_concurrency());
  std::uint64_t limit = 20'000'000;
  std::size_t chunks = 96;
  bool kill_one = true;
};

void usage(std::FILE* out) {
  std::fputs(
      "usage: primes_demo [options]\n"
      "Counts the primes below N serially, then over a pool of worker processes,\n"
      "then again while one busy worker is killed with SIGKILL mid-job.\n\n"
      "  -w, --workers N   worker processes (default: the number of CPUs)\n"
      "  -s, --size S      small (3M, about a second), medium (20M, default),\n"
      "                    large (60M), or a number N\n"
      "  -c, --chunks N    chunks the range is split into (default 96)\n"
      "      --no-kill     skip the pass that kills a worker\n"
      "  -h, --help        this text\n",
      out);
}

[[noreturn]] void bad_usage(const char* what) {
  std::fprintf(stderr, "primes_demo: %s\n\n", what);
  usage(stderr);
  std::exit(2);
}

std::uint64_t parse_number(const char* text, const char* what) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v == 0 || text[0] == '-') {
    bad_usage(what);
  }
  return v;
}

options parse_options(int argc, char** argv) {
  options o;
  const option longs[] = {
      {"workers", required_argument, nullptr, 'w'}, {"size", required_argument, nullptr, 's'},
      {"chunks", required_argument, nullptr, 'c'},  {"no-kill", no_argument, nullptr, 'k'},
      {"help", no_argument, nullptr, 'h'},          {nullptr, 0, nullptr, 0}};
  int c = 0;
  while ((c = ::getopt_long(argc, argv, "w:s:c:h", longs, nullptr)) != -1) {
    switch (c) {
      case 'w':
        o.workers = parse_number(optarg, "--workers takes a positive number");
        break;
      case 's': {
        std::string s = optarg;
        o.limit = s == "small"    ? 3'000'000
                  : s == "medium" ? 20'000'000
                  : s == "large"  ? 60'000'000
                                 : parse_number(optarg, "--size: small, medium, large or a number");
        break;
      }
      case 'c':
        o.chunks = parse_number(optarg, "--chunks takes a positive number");
        break;
      case 'k':
        o.kill_one = false;
        break;
      case 'h':
        usage(stdout);
        std::exit(0);
      default:
        bad_usage("unknown option");
    }
  }
  if (optind != argc) {
    bad_usage("unexpected argument");
  }
  o.chunks = std::min<std::uint64_t>(o.chunks, o.limit);
  return o;
}

// Chunk k covers [bounds[k], bounds[k+1]). Later numbers cost more (the
// divisor loop grows with sqrt(n)), so equal widths are uneven work; that is
// fine, the pool balances by handing out chunks as workers free up.
std::vector<std::uint64_t> split(std::uint64_t limit, std::size_t chunks) {
  std::vector<std::uint64_t> bounds(chunks + 1);
  for (std::size_t k = 0; k <= chunks; ++k) {
    bounds[k] = limit / chunks * k + std::min<std::uint64_t>(k, limit % chunks);
  }
  return bounds;
}

// One line, redrawn in place when stdout is a terminal; elsewhere (a pipe, a
// test log) only the finished line is printed.
class progress_bar {
 public:
  progress_bar(const char* label, std::size_t total, const char* unit = "chunks")
      : label_(label), unit_(unit), total_(total), tty_(::isatty(STDOUT_FILENO) != 0) {}

  void draw(std::size_t done, bool final = false) {
    if (!tty_ && !final) {
      return;
    }
    constexpr int width = 40;
    int filled = static_cast<int>(width * done / std::max<std::size_t>(total_, 1));
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    double s = std::chrono::duration<double>(clock_type::now() - start_).count();
    std::printf("%s%-9s [%s] %3zu%% %zu/%zu %s %6.2f s%s", tty_ ? "\r" : "", label_, bar.c_str(),
                100 * done / std::max<std::size_t>(total_, 1), done, total_, unit_, s,
                final ? "\n" : "");
    std::fflush(stdout);
  }
  double seconds() const {
    return std::chrono::duration<double>(clock_type::now() - start_).count();
  }

 private:
  const char* label_;
  const char* unit_;
  std::size_t total_;
  bool tty_;
  clock_type::time_point start_ = clock_type::now();
};

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five;
  in >> one >> five;
  return one + " " + five;
}

struct run_result {
  std::uint64_t primes = 0;
  double seconds = 0;
  std::size_t retried = 0;
  std::vector<std::uint64_t> chunk_counts;  // the serial pass's, per chunk
};

run_result run_serial(const std::vector<std::uint64_t>& bounds) {
  std::size_t chunks = bounds.size() - 1;
  progress_bar bar("serial", chunks);
  run_result r;
  for (std::size_t k = 0; k < chunks; ++k) {
    r.chunk_counts.push_back(count_primes(bounds[k], bounds[k + 1]));
    r.primes += r.chunk_counts.back();
    bar.draw(k + 1);
  }
  r.seconds = bar.seconds();
  bar.draw(chunks, true);
  return r;
}

// A worker inside count_chunk carries its name (a name is set before the
// count starts and reset only after it ended, so a SIGKILL now costs a chunk).
bool in_chunk(pid_t pid) {
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name == "primes-chunk";
}

// What the chunks of one parallel pass share. It lives in run_parallel's frame,
// which outlives every chunk coroutine (run_parallel waits for all of them).
struct pass_state {
  const std::vector<std::uint64_t>* bounds = nullptr;
  std::vector<std::uint64_t> counts;
  std::size_t done = 0;
  std::size_t retried = 0;
  std::size_t kill_after = 0;  // chunks done before a worker is killed (0: never)
  pid_t killed = 0;
  std::exception_ptr error;
};

// One chunk: submit, and submit again when the worker running it died.
asio::awaitable<void> run_chunk(coproc::process_pool& pool, pass_state& st, std::size_t k) {
  for (int attempt = 1;; ++attempt) {
    try {
      st.counts[k] = co_await pool.submit(count_chunk, (*st.bounds)[k], (*st.bounds)[k + 1]);
      break;
    } catch (const std::system_error& e) {
      if (e.code() != coproc::errc::worker_crashed || attempt == 3) {
        throw;
      }
      ++st.retried;
      std::printf("%schunk %zu lost its worker (%s): submitted again\n",
                  ::isatty(STDOUT_FILENO) ? "\r\033[K" : "", k, e.what());
    }
  }
  ++st.done;
}

// Kills one worker that is inside a chunk now. Returns false (asked again at
// the next tick) when none is: right after a completion, a worker may be
// between chunks, and killing it would cost nothing: correct, but no demo.
bool kill_busy_worker(coproc::process_pool& pool, pass_state& st) {
  coproc::pool_stats s = pool.stats();
  auto busy = std::find_if(s.worker_pids.begin(), s.worker_pids.end(), in_chunk);
  if (busy == s.worker_pids.end()) {
    return false;
  }
  st.killed = *busy;
  ::kill(st.killed, SIGKILL);
  std::printf("%sSIGKILL sent to worker pid %d with %zu of %zu chunks done\n",
              ::isatty(STDOUT_FILENO) ? "\r\033[K" : "", static_cast<int>(st.killed), st.done,
              st.counts.size());
  return true;
}

asio::awaitable<run_result> run_parallel(coproc::process_pool& pool, const char* label,
                                         const std::vector<std::uint64_t>& bounds, bool kill_one) {
  auto ex = co_await asio::this_coro::executor;
  std::size_t chunks = bounds.size() - 1;
  pass_state st;
  st.bounds = &bounds;
  st.counts.assign(chunks, 0);
  st.kill_after = kill_one ? std::max<std::size_t>(1, chunks / 3) : 0;

  // Every chunk is submitted at once; the pool queues what the workers cannot
  // take yet. The last chunk to finish cancels `tick`, which wakes this
  // coroutine at once instead of at the next redraw.
  asio::steady_timer tick(ex);
  std::size_t outstanding = chunks;
  for (std::size_t k = 0; k < chunks; ++k) {
    asio::co_spawn(ex, run_chunk(pool, st, k), [&](std::exception_ptr e) {
      if (e && !st.error) {
        st.error = e;
      }
      if (--outstanding == 0) {
        tick.cancel();
      }
    });
  }
  progress_bar bar(label, chunks);
  while (outstanding > 0) {
    if (st.kill_after != 0 && st.killed == 0 && st.done >= st.kill_after) {
      kill_busy_worker(pool, st);
    }
    bar.draw(st.done);
    // Redraw every 50 ms; while a kill is pending, look every millisecond.
    bool kill_pending = st.kill_after != 0 && st.killed == 0;
    tick.expires_after(std::chrono::milliseconds(kill_pending ? 1 : 50));
    std::error_code ec;
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  run_result r;
  r.seconds = bar.seconds();
  bar.draw(st.done, true);
  if (st.error) {
    std::rethrow_exception(st.error);
  }
  for (std::uint64_t c : st.counts) {
    r.primes += c;
  }
  r.retried = st.retried;
  co_return r;
}

// One long task's progress as it reports it: numbers examined, primes found.
struct progress {
  std::uint64_t examined = 0;
  std::uint64_t primes = 0;
};

// A whole range in one task that emits its progress 100 times; the caller
// reads each record while the task goes on counting.
void count_reporting(coproc::emitter<progress>& out, std::uint64_t lo, std::uint64_t hi) {
  const std::uint64_t step = std::max<std::uint64_t>(1, (hi - lo) / 100);
  progress p;
  for (std::uint64_t a = lo; a < hi; a += step) {
    const std::uint64_t b = std::min(hi, a + step);
    p.primes += count_primes(a, b);
    p.examined = b - lo;
    out(p);
  }
}

// The first quarter of the chunks as one streaming task; true when its count
// agrees with the serial pass's counts of those chunks.
asio::awaitable<bool> run_streamed(coproc::process_pool& pool,
                                   const std::vector<std::uint64_t>& bounds,
                                   const std::vector<std::uint64_t>& serial_counts) {
  const std::size_t chunks = std::max<std::size_t>(1, (bounds.size() - 1) / 4);
  const std::uint64_t hi = bounds[chunks];
  std::uint64_t expected = 0;
  for (std::size_t k = 0; k < chunks; ++k) {
    expected += serial_counts[k];
  }
  std::printf("one long task over [0, %" PRIu64 "), drawn from the progress it streams:\n", hi);
  progress_bar bar("1 task", 100, "reports");
  auto s = pool.stream(count_reporting, std::uint64_t{0}, hi);
  progress last;
  std::size_t reports = 0;
  while (auto p = co_await s.next()) {
    last = *p;
    ++reports;
    bar.draw(static_cast<std::size_t>(100 * last.examined / std::max<std::uint64_t>(hi, 1)));
  }
  bar.draw(100, true);
  std::printf("%zu progress records streamed; %" PRIu64 " primes below %" PRIu64 "%s\n", reports,
              last.primes, hi, last.primes == expected ? " (agrees with the serial pass)" : "");
  if (last.primes != expected) {
    std::printf("MISMATCH in the streamed count: serial %" PRIu64 "\n", expected);
  }
  co_return last.primes == expected;
}

asio::awaitable<int> demo(coproc::process_pool& pool, options opt) {
  auto bounds = split(opt.limit, opt.chunks);
  std::printf("counting primes below %" PRIu64 " in %zu chunks, %zu worker processes\n", opt.limit,
              opt.chunks, pool.size());

  run_result serial = run_serial(bounds);
  run_result parallel = co_await run_parallel(pool, "pool", bounds, false);
  std::printf("serial %.2f s, pool %.2f s: speedup %.2fx with %zu workers (%u CPUs)\n",
              serial.seconds, parallel.seconds, serial.seconds / parallel.seconds, pool.size(),
              std::thread::hardware_concurrency());
  if (serial.seconds / parallel.seconds <
      0.75 * static_cast<double>(
                 std::min<std::size_t>(pool.size(), std::thread::hardware_concurrency()))) {
    // The speedup is bounded by idle CPUs, not by the pool: say so.
    std::printf("(the CPUs are shared with other work: load average %s)\n", load_average().c_str());
  }
  int status = 0;
  if (parallel.primes != serial.primes) {
    std::printf("MISMATCH: serial %" PRIu64 ", pool %" PRIu64 "\n", serial.primes, parallel.primes);
    status = 1;
  }

  if (opt.kill_one) {
    std::printf("again, killing one busy worker mid-job:\n");
    run_result chaos = co_await run_parallel(pool, "pool+kill", bounds, true);
    coproc::pool_stats s = pool.stats();
    std::printf("%zu chunk(s) retried, %" PRIu64 " worker crash(es), %" PRIu64
                " respawn(s); %.2f s against %.2f s undisturbed; %zu workers alive\n",
                chaos.retried, s.worker_crashes, s.respawns, chaos.seconds, parallel.seconds,
                s.workers_alive);
    if (chaos.primes != serial.primes) {
      std::printf("MISMATCH after the kill: %" PRIu64 "\n", chaos.primes);
      status = 1;
    }
  }
  if (!co_await run_streamed(pool, bounds, serial.chunk_counts)) {
    status = 1;
  }
  std::printf("%" PRIu64 " primes below %" PRIu64 "%s\n", serial.primes, opt.limit,
              status == 0 ? " (serial and pool agree)" : "");
  co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
  co_return status;
}

}  // namespace

int main(int argc, char** argv) {
  options opt = parse_options(argc, argv);
  asio::io_context ctx;
  // The pool forks its zygote here, first thing, while the process has one thread.
  coproc::process_pool pool(ctx.get_executor(), {.workers = opt.workers});
  int status = 1;
  asio::co_spawn(ctx, demo(pool, opt), [&](std::exception_ptr e, int s) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "primes_demo: %s\n", ex.what());
      }
      return;
    }
    status = s;
  });
  ctx.run();
  return status;
}
