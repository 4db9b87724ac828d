#pragma once
// For parent-death tests: the forked owner of a pool keeps two workers busy
// and reports their pids over a pipe, then runs until it is killed.

#include <sys/types.h>
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <exception>
#include <vector>

namespace coproc::test {

/// Submits `spin` (never returns) twice, waits until stats() knows both
/// worker pids (spawn reports arrive asynchronously), writes them and a 0 to
/// `fd`, and runs `ctx` until the process is killed. Never returns.
template <class Pool, class Spin>
[[noreturn]] void report_busy_workers(asio::io_context& ctx, Pool& pool, Spin spin, int fd) {
  pool.async_submit(spin, [](std::exception_ptr, int) {});
  pool.async_submit(spin, [](std::exception_ptr, int) {});
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(ctx);
        while (pool.stats().worker_pids.size() < 2) {
          t.expires_after(std::chrono::milliseconds(1));
          co_await t.async_wait(asio::use_awaitable);
        }
        std::vector<pid_t> pids = pool.stats().worker_pids;
        pids.push_back(0);
        [[maybe_unused]] auto n = ::write(fd, pids.data(), pids.size() * sizeof(pid_t));
      },
      asio::detached);
  ctx.run();
  ::_exit(0);
}

}  // namespace coproc::test
