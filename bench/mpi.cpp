// bench_mpi: task round trip, no-op throughput and CPU-bound speedup through
// MPI ranks (each rank runs its tasks in its own pool of forked workers),
// next to a local process_pool with as many workers, in the same run. Run
// under mpirun:
//   mpirun -np 3 bench_mpi [mpi] [--quick]
//   mpirun -np 2 bench_mpi mpi_one_rank [--quick]
// (bench/run.py's group `mpi` does that). Rank 0 measures; the other ranks
// serve mpi_pool tasks, first with 1 worker each, then with 2. Prints the
// JSON lines of bench/run.py's protocol: mpi_rtt_p50/p99, mpi_noop_tput (1
// worker per rank), the same with the suffix _2w (2 workers per rank), and
// mpi_cpu_speedup_3x1 (-np 3, 2 worker ranks x 1 worker) and _2x2 (argument
// mpi_one_rank under -np 2: 1 worker rank x 2 workers): CPU-bound tasks,
// serial time over the pool's.

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "json_lines.hpp"

#include "coproc/executors/process_pool.hpp"
#include "coproc/mpi/mpi_pool.hpp"

namespace {

int noop(int x) {
  return x;
}

// About `ms` milliseconds of arithmetic on one core.
std::uint64_t spin(int ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  std::uint64_t x = 1;
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 1000; ++i) {
      x = x * 6364136223846793005u + 1442695040888963407u;
    }
  }
  return x;
}

using clock_type = std::chrono::steady_clock;

template <class Pool>
asio::awaitable<void> measure(Pool& pool, std::string contender, int rtt_n, int tput_n,
                              std::string extra, std::string suffix) {
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
  bench::emit("mpi_rtt_p50" + suffix, contender, bench::percentile(us, 0.50), "us", "lower", extra);
  bench::emit("mpi_rtt_p99" + suffix, contender, bench::percentile(us, 0.99), "us", "lower", extra);

  // No-op throughput: one task per item, all submitted at once.
  std::vector<int> items(static_cast<std::size_t>(tput_n), 1);
  auto t0 = clock_type::now();
  std::vector<int> out = co_await pool.map(noop, items, 1);
  auto t1 = clock_type::now();
  double s = std::chrono::duration<double>(t1 - t0).count();
  bench::emit("mpi_noop_tput" + suffix, contender, static_cast<double>(out.size()) / s, "tasks/s",
              "higher", extra);
}

// CPU-bound tasks: the same work run here serially, over its time through
// the pool (oversubscribed on a machine with fewer cores than workers).
template <class Pool>
asio::awaitable<void> speedup(Pool& pool, std::string contender, int items, int ms, double serial_s,
                              std::string extra, std::string suffix) {
  std::vector<int> work(static_cast<std::size_t>(items), ms);
  auto t0 = clock_type::now();
  co_await pool.map(spin, work, 1);
  double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  bench::emit("mpi_cpu_speedup" + suffix, contender, serial_s / s, "x", "higher", extra);
}

double serial_seconds(int items, int ms) {
  auto t0 = clock_type::now();
  for (int i = 0; i < items; ++i) {
    spin(ms);
  }
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  coproc::mpi_pool::run_workers_if_not_root(argc, argv);  // ranks 1.. serve tasks
  bool quick = false;
  bool one_rank = false;  // mpirun -np 2: one worker rank with 2 workers
  for (int i = 1; i < argc; ++i) {
    quick = quick || std::string_view(argv[i]) == "--quick";
    one_rank = one_rank || std::string_view(argv[i]) == "mpi_one_rank";
  }
  int rtt_n = quick ? 500 : 5000;
  int tput_n = quick ? 5000 : 50000;
  int items = quick ? 8 : 16;
  int ms = quick ? 10 : 25;
  double serial_s = serial_seconds(items, ms);
  // One mpi_pool at a time. Under -np 3: 1 worker per rank, then 2 (round
  // trip and throughput rows, and the 3x1 layout's speedup); under -np 2:
  // the 2x2 layout's speedup. The local pool with as many workers is the
  // floor mpi_pool is compared with: reported as the row's "limit" column,
  // mpi_pool as "coproc".
  std::vector<std::size_t> layouts =
      one_rank ? std::vector<std::size_t>{2} : std::vector<std::size_t>{1, 2};
  for (std::size_t per_rank : layouts) {
    std::string suffix = per_rank == 1 ? "" : "_2w";
    std::string speedup_row = one_rank ? "_2x2" : per_rank == 1 ? "_3x1" : "";
    asio::io_context ctx;
    coproc::mpi_pool mpi(ctx.get_executor(), {}, {.workers_per_rank = per_rank});
    coproc::process_pool local(ctx.get_executor(), {.workers = mpi.size()});
    std::string limit = ", \"kind\": \"limit\"";
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          if (!one_rank) {
            co_await measure(local, "coproc process_pool", rtt_n, tput_n, limit, suffix);
            co_await measure(mpi, "coproc mpi_pool", rtt_n, tput_n, "", suffix);
          }
          if (!speedup_row.empty()) {
            co_await speedup(local, "coproc process_pool", items, ms, serial_s, limit, speedup_row);
            co_await speedup(mpi, "coproc mpi_pool", items, ms, serial_s, "", speedup_row);
          }
        },
        [](std::exception_ptr e) {
          if (e) {
            std::rethrow_exception(e);
          }
        });
    ctx.run();
  }
  return 0;
}
