// process_pool, process, manager take an asio::io_context& as well as an executor, as
// Asio's own I/O objects do (issue 14 item 4).
#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <string>

#include "async_test.hpp"
#include "coproc/coproc.hpp"

#include <unistd.h>

namespace {
int triple(int x) {
  return 3 * x;
}
void exit_with(int code) {
  ::_exit(code);
}
}  // namespace

TEST_CASE("process_pool, process and manager are built from an io_context",
          "[process_pool][process]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    int v = co_await pool.submit(triple, 14);
    CHECK(v == 42);

    coproc::process child(ctx, exit_with, 7);
    child.start();
    auto st = co_await child.async_join(asio::use_awaitable);
    CHECK(st.code == 7);

    coproc::manager<std::string, int> m(ctx);
    auto d = m.dict();
    co_await d.async_set("k", 1, asio::use_awaitable);
    auto got = co_await d.async_get("k", asio::use_awaitable);
    CHECK(got == 1);
  });
}
