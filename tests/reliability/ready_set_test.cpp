// The parent drains only the result rings its workers marked in the pool's
// ready set (executors/detail/ready_set.hpp). Every worker can write that
// set: a task that keeps clearing it must not leave other tasks' results
// unread for ever. The pool's periodic check drains every ring.

#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/detail/pool_layout.hpp"
#include "coproc/executors/process_pool.hpp"
#include "pool_mapping.hpp"

namespace {

constexpr std::size_t workers = 3;
constexpr std::size_t ring_bytes = 64 * 1024;
constexpr std::size_t max_payload = 64 * 1024;

/// Runs in a worker: clears the whole ready set, again and again, for `ms`.
/// Returns how many marks it cleared.
int clear_ready_set(int ms) {
  std::byte* base = coproc::test::pool_mapping().first;
  if (base == nullptr) {
    return -1;
  }
  coproc::detail::pool_geometry g{workers, ring_bytes, max_payload};
  auto* words = reinterpret_cast<coproc::detail::ready_set::word*>(
      base + coproc::detail::slot_channel::round(sizeof(coproc::detail::pool_header)));
  int marks = 0;

  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until) {
    for (std::size_t i = 0; i < coproc::detail::ready_set::word_count(g.slots); ++i) {
      marks += words[i].exchange(0, std::memory_order_relaxed) != 0 ? 1 : 0;
    }
  }
  return marks;
}

int twice(int x) {
  return 2 * x;
}

}  // namespace

TEST_CASE("a task that keeps clearing the ready set delays results, never loses them",
          "[reliability]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(
        ctx.get_executor(),
        {.workers = workers, .ring_bytes = ring_bytes, .max_payload = max_payload});
    co_await pool.submit(twice, 1);  // every worker forked, the mapping in place

    bool scribbler_done = false;
    int cleared = 0;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          cleared = co_await pool.submit(clear_ready_set, 400);
          scribbler_done = true;
        },
        asio::detached);
    // One task at a time, for as long as the clearing goes on: each result
    // is the only one in its ring, so a lost mark would leave it there with
    // nothing else to wake the parent.
    int tasks = 0;
    bool all_right = true;
    while (!scribbler_done) {
      all_right = all_right && co_await pool.submit(twice, tasks) == 2 * tasks;
      ++tasks;
    }
    std::printf("tasks run meanwhile: %d, marks the task cleared: %d\n", tasks, cleared);
    CHECK(all_right);
    CHECK(cleared > 0);  // else the test proved nothing
  });
}
