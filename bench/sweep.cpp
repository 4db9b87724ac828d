// bench_sweep: how the parent's cost per task grows with the worker count.
//
//   bench_sweep sweep [--quick]
//
// For each worker count W in 1, 2, 4, ... up to max(128, 16 x the allowed
// CPUs), a fresh pool (default options but W workers):
// - sweep_ready_wW: construct to the first result (ms), measured for every
//   count first, before any load: the default start method forks the host,
//   whose page tables grow with its heap (after the 2M-item maps below a
//   pool took 2.5-3.2 ms here where a program's first pools take 1-1.8);
// - sweep_submit_wW: no-op single submits per second, 2 x W coroutines each
//   awaiting one submit at a time (at least 2);
// - sweep_cpu_per_task_wW: the parent process's CPU (user + system, every
//   thread, getrusage) over those submits, per task (us);
// - sweep_map_wW: items per second of one map of no-op items (auto chunks).
// Output: one JSON object per line, the protocol described in bench/run.py.
#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "coproc/executors/process_pool.hpp"
#include "json_lines.hpp"

namespace {

using bench::emit;
using clock_type = std::chrono::steady_clock;

bool quick = false;

int noop(int x) {
  return x;
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

std::vector<std::size_t> worker_counts() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  const std::size_t top =
      std::max<std::size_t>(128, 16 * static_cast<std::size_t>(CPU_COUNT(&set)));
  std::vector<std::size_t> out;
  for (std::size_t w = 1; w <= top; w *= 2) {
    out.push_back(w);
  }
  return out;
}

// `coroutines` loops, each awaiting one no-op submit at a time, until `n`
// tasks completed. Returns (tasks/s, parent CPU us per task).
asio::awaitable<std::pair<double, double>> submits(coproc::process_pool& pool, std::size_t n,
                                                   std::size_t coroutines) {
  auto ex = co_await asio::this_coro::executor;
  std::size_t next = 0;
  std::size_t running = coroutines;
  asio::steady_timer finished(ex, clock_type::time_point::max());
  const double cpu0 = cpu_seconds();
  const auto t0 = clock_type::now();
  for (std::size_t c = 0; c < coroutines; ++c) {
    asio::co_spawn(
        ex,
        [&]() -> asio::awaitable<void> {
          while (next < n) {
            ++next;
            co_await pool.submit(noop, 1);
          }
          if (--running == 0) {
            finished.cancel();
          }
        },
        asio::detached);
  }
  std::error_code ec;
  co_await finished.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  const double secs = seconds_since(t0);
  const double cpu = cpu_seconds() - cpu0;
  co_return std::pair{static_cast<double>(n) / secs, cpu / static_cast<double>(n) * 1e6};
}

std::string workers_field(std::size_t w) {
  return ", \"workers\": " + std::to_string(w);
}

asio::awaitable<void> ready(std::size_t w) {
  auto ex = co_await asio::this_coro::executor;
  const auto t0 = clock_type::now();
  coproc::process_pool pool(ex, {.workers = w});
  co_await pool.submit(noop, 1);
  emit("sweep_ready_w" + std::to_string(w), "coproc process_pool", seconds_since(t0) * 1e3, "ms",
       "lower", workers_field(w));
  co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
}

asio::awaitable<void> one_count(std::size_t w) {
  const std::size_t n = quick ? 20'000 : 200'000;
  const std::size_t items = quick ? 200'000 : 2'000'000;
  const std::string tag = "_w" + std::to_string(w);
  const std::string workers = workers_field(w);
  coproc::process_pool pool(co_await asio::this_coro::executor, {.workers = w});

  // Warm every worker (and the parent's paths) before measuring.
  co_await submits(pool, std::min<std::size_t>(n, 20 * w), std::max<std::size_t>(2, 2 * w));
  auto [rate, cpu_us] = co_await submits(pool, n, std::max<std::size_t>(2, 2 * w));
  emit("sweep_submit" + tag, "coproc submit", rate, "tasks/s", "higher", workers);
  emit("sweep_cpu_per_task" + tag, "coproc submit", cpu_us, "us", "lower", workers);

  std::vector<int> in(items, 1);
  const auto m0 = clock_type::now();
  auto out = co_await pool.map(noop, in);
  emit("sweep_map" + tag, "coproc map (auto chunks)",
       static_cast<double>(out.size()) / seconds_since(m0), "items/s", "higher", workers);
  co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
}

bool run_one(asio::awaitable<void> (*step)(std::size_t), std::size_t w) {
  asio::io_context ctx;
  std::exception_ptr error;
  asio::co_spawn(ctx, step(w), [&](std::exception_ptr e) { error = e; });
  ctx.run();
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_sweep %zu workers: %s\n", w, e.what());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string group = argc > 1 ? argv[1] : "";
  quick = argc > 2 && std::string_view(argv[2]) == "--quick";
  if (group != "sweep") {
    std::fprintf(stderr, "usage: bench_sweep sweep [--quick]\n");
    return 2;
  }
  for (auto step : {ready, one_count}) {
    for (std::size_t w : worker_counts()) {
      if (!run_one(step, w)) {
        return 1;
      }
    }
  }
  return 0;
}
