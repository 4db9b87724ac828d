// Built by ctest pkg_config_* with nothing but `c++ main.cpp $(pkg-config --cflags --libs
// coproc)` against the installed package (tests/pkg_config/run_pkg_config.cmake), then run.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <coproc/coproc.hpp>

#include <cstdio>

namespace {
int twice(int x) {
  return 2 * x;
}
}  // namespace

int main() {
  asio::io_context ctx;
  coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
  int got = 0;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { got = co_await pool.submit(twice, 21); },
      asio::detached);
  ctx.run();
  std::printf("pkg-config consumer: %d\n", got);
  return got == 42 ? 0 : 1;
}
