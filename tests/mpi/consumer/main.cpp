// Built against the installed package only: proves
// find_package(coproc REQUIRED COMPONENTS mpi) gives a working coproc::mpi.
// Run under mpirun -np 2: rank 1 serves, rank 0 submits one task.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <coproc/coproc.hpp>
#include <coproc/mpi/mpi_pool.hpp>
#include <cstdio>

namespace {
int twice(int x) {
  return 2 * x;
}
}  // namespace

int main(int argc, char** argv) {
  coproc::mpi_pool::run_workers_if_not_root(argc, argv);
  asio::io_context ctx;
  coproc::mpi_pool pool(ctx.get_executor());
  int got = 0;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { got = co_await pool.submit(twice, 21); },
      asio::detached);
  ctx.run();
  std::printf("mpi_consumer: %d from %zu rank(s)\n", got, pool.size());
  return got == 42 ? 0 : 1;
}
