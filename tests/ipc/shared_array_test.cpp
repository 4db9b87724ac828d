#include "coproc/ipc/shared_array.hpp"

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <numeric>
#include <span>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/codec.hpp"

namespace {

std::size_t add_under_lock(coproc::shared_array<int> a, int k) {
  for (int round = 0; round < 1000; ++round) {
    a.update([k](std::span<int> s) {
      for (int& x : s) {
        x += k;
      }
    });
  }
  return a.size();
}

coproc::shared_array<long> squares(int n) {
  coproc::shared_array<long> a(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    a.store(static_cast<std::size_t>(i), long{i} * i);
  }
  return a;
}

}  // namespace

TEST_CASE("a shared_array crosses to tasks as a handle with its lock", "[shared_array]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 2});
    coproc::shared_array<int> a(64);
    CHECK(coproc::encoded_size(a) < 64);
    // Two tasks at once, each adding under the array's process-shared lock.
    auto one = pool.submit(add_under_lock, a, 1);
    auto two = pool.submit(add_under_lock, a, 2);
    using namespace asio::experimental::awaitable_operators;
    auto sizes = co_await (std::move(one) && std::move(two));
    CHECK(std::get<0>(sizes) == 64);
    CHECK(std::get<1>(sizes) == 64);
    std::vector<int> got = a.snapshot();
    CHECK(std::all_of(got.begin(), got.end(), [](int x) { return x == 3000; }));
  });
}

TEST_CASE("a task returns a shared_array it created", "[shared_array]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    coproc::shared_array<long> a = co_await pool.submit(squares, 100);
    REQUIRE(a.size() == 100);
    CHECK(a.load(99) == 99 * 99);
    a.store(0, 5);  // the lock attached here works too
    CHECK(a.load(0) == 5);
  });
}
