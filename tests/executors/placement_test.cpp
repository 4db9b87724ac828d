// Where and when a pool's tasks run (issue 19): with more workers than CPUs,
// short tasks are packed onto about as many workers as there are CPUs, so
// that the parent does not wake a sleeping worker per task, and tasks queued
// behind one that turns out long move to idle workers; a new pool's first
// task runs before the other workers are forked. No case asserts a
// duration: packing shows in which worker ran a task, moving in whether
// tasks that wait for each other all got to run at once, forking in the
// zygote's children.
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "async_test.hpp"
#include "coproc/coproc.hpp"
#include "coproc/runtime/detail/usable_cpus.hpp"
#include "poll_until.hpp"

namespace {

using coproc::process_pool;

const std::size_t cpus = coproc::detail::usable_cpus();
const std::size_t workers = cpus + 6;  // more workers than CPUs, and more than cpus + 2

/// A word the test and its workers share: mapped before any pool (and so
/// any zygote) exists.
std::atomic<std::uint32_t>& started() {
  static coproc::mapped_region region = coproc::mapped_region::create(4096);
  static auto* word = new (region.data()) std::atomic<std::uint32_t>(0);
  return *word;
}

// Tasks (they run in workers).
int worker_pid() {
  return static_cast<int>(::getpid());
}

/// Announces itself, then waits (sleeping, not spinning) until `n` tasks
/// did: true when they all ran at the same time, false after 5 s.
bool meet(std::uint32_t n) {
  started().fetch_add(1);
  for (int i = 0; i < 5000; ++i) {
    if (started().load() >= n) {
      return true;
    }
    ::usleep(1000);
  }
  return false;
}

/// After `ms` milliseconds: the workers alive, counted as the children of
/// the zygote (every worker's parent, a single-threaded process).
int workers_after(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  const std::string zygote = std::to_string(::getppid());
  std::ifstream in("/proc/" + zygote + "/task/" + zygote + "/children");
  int n = 0;
  for (long pid = 0; in >> pid;) {
    ++n;
  }
  return n;
}

/// Runs `count` no-op tasks at once and returns the distinct workers that ran them.
asio::awaitable<std::size_t> workers_used(process_pool& pool, std::size_t count) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<int> pids;
  std::size_t left = count;
  asio::steady_timer all_done(ex, std::chrono::steady_clock::time_point::max());
  for (std::size_t i = 0; i < count; ++i) {
    asio::co_spawn(ex, pool.submit(worker_pid), [&](std::exception_ptr e, int pid) {
      pids.push_back(e ? -1 : pid);
      if (--left == 0) {
        all_done.cancel();
      }
    });
  }
  std::error_code ec;
  co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return std::set<int>(pids.begin(), pids.end()).size();
}

}  // namespace

TEST_CASE("short tasks are packed onto as many workers as there are CPUs",
          "[process_pool][placement]") {
  std::vector<std::size_t> used;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = workers});
    // Rounds of 4 tasks per worker at once: spread, every worker runs some;
    // packed, about `cpus` workers run them all (32 in flight each fit them).
    // One round that shows packing is enough: a descheduled worker makes a
    // task look long for a while, and the pool spreads again meanwhile.
    for (int round = 0; round < 20; ++round) {
      used.push_back(co_await workers_used(pool, 4 * workers));
      if (used.back() <= cpus + 2) {
        break;
      }
    }
    co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
  });
  INFO("CPUs " << cpus << ", workers " << workers << ", workers used in the last round "
               << used.back() << " after " << used.size() << " rounds");
  CHECK(used.back() <= cpus + 2);
}

TEST_CASE("tasks queued behind a long task move to idle workers", "[process_pool][placement]") {
  started() = 0;
  std::vector<bool> met;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = workers});
    // Short tasks first, so that the pool packs what comes next.
    for (int round = 0; round < 4; ++round) {
      co_await workers_used(pool, 4 * workers);
    }
    // One task per worker, each waiting until all ran at once: packed
    // behind each other they would wait in vain, unless moved.
    auto ex = co_await asio::this_coro::executor;
    std::size_t left = workers;
    asio::steady_timer all_done(ex, std::chrono::steady_clock::time_point::max());
    for (std::size_t i = 0; i < workers; ++i) {
      asio::co_spawn(ex, pool.submit(meet, static_cast<std::uint32_t>(workers)),
                     [&](std::exception_ptr e, bool ok) {
                       met.push_back(!e && ok);
                       if (--left == 0) {
                         all_done.cancel();
                       }
                     });
    }
    std::error_code ec;
    co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
  });
  INFO("tasks that met all the others: " << std::count(met.begin(), met.end(), true) << " of "
                                         << workers);
  CHECK(std::count(met.begin(), met.end(), true) == static_cast<std::ptrdiff_t>(workers));
}

TEST_CASE("a new pool forks its other workers once its first task is back",
          "[process_pool][placement]") {
  int during = 0;
  std::size_t after = 0;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 8});
    // 200 ms is ample for the zygote to fork 7 workers (about 4 ms for 64 here).
    during = co_await pool.submit(workers_after, 200);
    co_await coproc::test::poll_until([&] { return pool.stats().workers_alive == 8; },
                                      std::chrono::milliseconds(5), 2000);
    after = pool.stats().workers_alive;
    co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
  });
  CHECK(during == 1);
  CHECK(after == 8);
}
