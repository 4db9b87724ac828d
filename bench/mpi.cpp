// bench_mpi: task round trip and no-op throughput through MPI ranks, next to
// the local process_pool in the same run. Run under mpirun:
//   mpirun -np 3 bench_mpi [mpi] [--quick]
// (bench/run.py's group `mpi` does that). Rank 0 measures (both pools get
// world size - 1 workers); the other ranks serve mpi_pool tasks. Prints the
// JSON lines of bench/run.py's protocol: mpi_rtt_p50/p99, mpi_noop_tput.

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
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

using clock_type = std::chrono::steady_clock;

template <class Pool>
asio::awaitable<void> measure(Pool& pool, std::string contender, int rtt_n, int tput_n,
                              std::string extra) {
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
  bench::emit("mpi_rtt_p50", contender, bench::percentile(us, 0.50), "us", "lower", extra);
  bench::emit("mpi_rtt_p99", contender, bench::percentile(us, 0.99), "us", "lower", extra);

  // No-op throughput: one task per item, all submitted at once.
  std::vector<int> items(static_cast<std::size_t>(tput_n), 1);
  auto t0 = clock_type::now();
  std::vector<int> out = co_await pool.map(noop, items, 1);
  auto t1 = clock_type::now();
  double s = std::chrono::duration<double>(t1 - t0).count();
  bench::emit("mpi_noop_tput", contender, static_cast<double>(out.size()) / s, "tasks/s", "higher",
              extra);
}

}  // namespace

int main(int argc, char** argv) {
  coproc::mpi_pool::run_workers_if_not_root(argc, argv);  // ranks 1.. serve tasks
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    quick = quick || std::string_view(argv[i]) == "--quick";
  }
  int rtt_n = quick ? 500 : 5000;
  int tput_n = quick ? 5000 : 50000;
  asio::io_context ctx;
  coproc::mpi_pool mpi(ctx.get_executor());
  coproc::process_pool local(ctx.get_executor(), {.workers = mpi.size()});
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        // The local pool is the floor mpi_pool is compared with: reported as
        // the row's "limit" column, mpi_pool as "coproc".
        co_await measure(local, "coproc process_pool", rtt_n, tput_n, ", \"kind\": \"limit\"");
        co_await measure(mpi, "coproc mpi_pool", rtt_n, tput_n, "");
      },
      [](std::exception_ptr e) {
        if (e) {
          std::rethrow_exception(e);
        }
      });
  ctx.run();
  return 0;
}
