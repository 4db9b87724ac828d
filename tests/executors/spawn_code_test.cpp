// A spawned worker jumps only into the main executable's code: a task
// function of a shared library (which the exec'd image may load elsewhere) is
// refused with errc::function_mismatch, never called at a guessed address.
// A fork_server pool shares the parent's layout and runs it.

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/runtime/errc.hpp"

extern "C" int coproc_test_plugin_twice(int x);

namespace {

int twice_here(int x) {
  return 2 * x;
}

coproc::pool_options with(coproc::start_method method) {
  return {.workers = 1, .start_method = method};
}

}  // namespace

TEST_CASE("spawn: a task function of a shared library is refused, the pool goes on",
          "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), with(coproc::start_method::spawn));
    // A worker's std::system_error of coproc's category comes back as itself.
    std::error_code code;
    try {
      co_await pool.submit(&coproc_test_plugin_twice, 21);
      FAIL("a function outside the executable ran in a spawned worker");
    } catch (const std::system_error& e) {
      code = e.code();
    }
    CHECK(code == coproc::errc::function_mismatch);
    std::vector<int> in{1, 2, 3};
    code = {};
    try {
      co_await pool.map(&coproc_test_plugin_twice, in);
      FAIL("map ran a function outside the executable in a spawned worker");
    } catch (const std::system_error& e) {
      code = e.code();
    }
    CHECK(code == coproc::errc::function_mismatch);
    int here = co_await pool.submit(&twice_here, 21);
    CHECK(here == 42);
    auto s = pool.stats();
    CHECK(s.worker_crashes == 0);
  });
}

TEST_CASE("fork_server: a task function of a shared library runs", "[spawn_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), with(coproc::start_method::fork_server));
    int v = co_await pool.submit(&coproc_test_plugin_twice, 21);
    CHECK(v == 42);
  });
}

TEST_CASE("checked_code_address refuses what the allowed ranges do not hold", "[spawn_pool]") {
  auto& allowed = coproc::detail::allowed_code();
  const auto saved = allowed;
  const auto here = reinterpret_cast<std::uintptr_t>(&twice_here);
  const auto offset = coproc::detail::code_offset(reinterpret_cast<const void*>(&twice_here));
  allowed.count = 1;
  allowed.begin[0] = here;
  allowed.end[0] = here + 1;
  CHECK(coproc::detail::checked_code_address(offset) == reinterpret_cast<const void*>(here));
  allowed.begin[0] = here + 1;
  allowed.end[0] = here + 2;
  try {
    coproc::detail::checked_code_address(offset);
    FAIL("an address outside the allowed ranges was accepted");
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::function_mismatch);
  }
  allowed = saved;
}
