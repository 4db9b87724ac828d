// bench_mpi: task round trip and no-op throughput through MPI ranks, next to
// the local process_pool in the same run. Run under mpirun:
//   mpirun -np 3 bench_mpi [--quick]
// Rank 0 measures (both pools get world size - 1 workers); the other ranks
// serve mpi_pool tasks. Prints the JSON lines of bench/run.py's protocol.

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "coproc/executors/process_pool.hpp"
#include "coproc/mpi/mpi_pool.hpp"

namespace {

int noop(int x) {
  return x;
}

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

double at(const std::vector<double>& sorted, double q) {
  return sorted[std::min(sorted.size() - 1,
                         static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1)))];
}

using clock_type = std::chrono::steady_clock;

template <class Pool>
asio::awaitable<void> measure(Pool& pool, std::string contender, int rtt_n, int tput_n) {
  for (int i = 0; i < 50; ++i) {  // warm up
    co_await pool.submit(noop, i);
  }
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(rtt_n));
  for (int i = 0; i < rtt_n; ++i) {
    auto t0 = clock_type::now();
    int v = co_await pool.submit(noop, i);
    auto t1 = clock_type::now();
    if (v != i) {
      throw std::runtime_error("wrong result");
    }
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  emit("task_rtt_p50", contender, at(us, 0.5), "us", "lower");
  emit("task_rtt_p99", contender, at(us, 0.99), "us", "lower");

  // No-op throughput: one task per item, all submitted at once.
  std::vector<int> items(static_cast<std::size_t>(tput_n), 1);
  auto t0 = clock_type::now();
  std::vector<int> out = co_await pool.map(noop, items, 1);
  auto t1 = clock_type::now();
  double s = std::chrono::duration<double>(t1 - t0).count();
  emit("noop_throughput", contender, static_cast<double>(out.size()) / s, "tasks/s", "higher");
}

}  // namespace

int main(int argc, char** argv) {
  coproc::mpi_pool::run_workers_if_not_root(argc, argv);  // ranks 1.. serve tasks
  bool quick = argc > 1 && std::string_view(argv[1]) == "--quick";
  int rtt_n = quick ? 500 : 5000;
  int tput_n = quick ? 5000 : 50000;
  asio::io_context ctx;
  coproc::mpi_pool mpi(ctx.get_executor());
  coproc::process_pool local(ctx.get_executor(), {.workers = mpi.size()});
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        co_await measure(local, "coproc process_pool", rtt_n, tput_n);
        co_await measure(mpi, "coproc mpi_pool", rtt_n, tput_n);
      },
      [](std::exception_ptr e) {
        if (e) {
          std::rethrow_exception(e);
        }
      });
  ctx.run();
  return 0;
}
