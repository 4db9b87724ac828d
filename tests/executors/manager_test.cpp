// Tests of coproc::manager: dict and list from the parent's coroutines and
// from forked children, the server's death seen cleanly everywhere, fds.

#include <signal.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <coproc/executors/manager.hpp>
#include <coproc/runtime/child_process.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "async_test.hpp"

namespace {

using mgr = coproc::manager<std::string, int>;

std::size_t count_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

template <class Fn>
std::error_code error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

}  // namespace

TEST_CASE("dict and list from the parent's coroutines", "[manager]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    mgr m(ctx.get_executor());
    auto d = m.dict();
    auto l = m.list();
    co_await d.async_set("a", 1, asio::use_awaitable);
    co_await d.async_set("b", 2, asio::use_awaitable);
    co_await d.async_set("a", 3, asio::use_awaitable);
    auto a = co_await d.async_get("a", asio::use_awaitable);
    CHECK(a == 3);
    auto missing = co_await d.async_get("zz", asio::use_awaitable);
    CHECK(!missing);
    auto n = co_await d.async_size(asio::use_awaitable);
    CHECK(n == 2);
    auto keys = co_await d.async_keys(asio::use_awaitable);
    CHECK(keys == std::vector<std::string>{"a", "b"});
    auto erased = co_await d.async_erase("b", asio::use_awaitable);
    auto erased_again = co_await d.async_erase("b", asio::use_awaitable);
    CHECK(erased);
    CHECK(!erased_again);

    co_await l.async_push_back(10, asio::use_awaitable);
    co_await l.async_push_back(20, asio::use_awaitable);
    auto second = co_await l.async_get(1, asio::use_awaitable);
    CHECK(second == 20);
    auto ln = co_await l.async_size(asio::use_awaitable);
    CHECK(ln == 2);
    auto popped = co_await l.async_pop(asio::use_awaitable);
    CHECK(popped == 20);
    bool threw = false;
    try {
      co_await l.async_get(5, asio::use_awaitable);
    } catch (const std::out_of_range&) {
      threw = true;
    }
    CHECK(threw);
    // Concurrent async calls from several coroutines are ordered, not mixed.
    std::size_t done = 0;
    for (int i = 0; i < 20; ++i) {
      asio::co_spawn(ctx, d.async_set("k" + std::to_string(i), i, asio::use_awaitable),
                     [&](std::exception_ptr e) { done += e ? 0 : 1; });
    }
    asio::steady_timer t(ctx);
    while (done < 20) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    auto n2 = co_await d.async_size(asio::use_awaitable);
    CHECK(n2 == 21);
  });
}

TEST_CASE("forked children use the same dict and list with blocking calls", "[manager]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    mgr m(ctx.get_executor());
    auto d = m.dict();
    auto l = m.list();
    d.set("parent", 0);  // the parent connects first: children must not reuse its stream
    std::vector<coproc::child_process> children;
    for (int c = 0; c < 3; ++c) {
      children.push_back(coproc::child_process::fork_child([d, l, c]() mutable -> int {
        for (int i = 0; i < 50; ++i) {
          d.set("c" + std::to_string(c) + "_" + std::to_string(i), i);
          l.push_back(c * 1000 + i);
        }
        return d.get("parent") == 0 ? 0 : 3;
      }));
    }
    for (auto& child : children) {
      auto st = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
      CHECK(st.success());
    }
    auto n = co_await d.async_size(asio::use_awaitable);
    CHECK(n == 151);
    auto ln = co_await l.async_size(asio::use_awaitable);
    CHECK(ln == 150);
    auto v = co_await d.async_get("c2_49", asio::use_awaitable);
    CHECK(v == 49);
  });
}

TEST_CASE("a killed manager gives peer_died at every proxy, never a hang", "[manager]") {
  std::size_t before = count_fds();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    mgr m(ctx.get_executor());
    auto d = m.dict();
    auto l = m.list();
    co_await d.async_set("x", 1, asio::use_awaitable);
    // A child that already talked to the server waits for the kill, then calls again.
    int go[2];
    int ready[2];
    REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    auto child =
        coproc::child_process::fork_child([d, l, fd = go[0], rd = ready[1]]() mutable -> int {
          if (d.get("x") != 1) {
            return 2;
          }
          char c = 'r';
          if (::write(rd, &c, 1) != 1) {
            return 6;
          }
          if (::read(fd, &c, 1) != 1) {
            return 3;
          }
          try {
            l.push_back(1);
          } catch (const std::system_error& e) {
            return e.code() == coproc::errc::peer_died ? 0 : 4;
          }
          return 5;
        });
    ::close(go[0]);
    ::close(ready[1]);
    char r = 0;
    CHECK(::read(ready[0], &r, 1) == 1);  // the child has its own stream now
    ::close(ready[0]);
    m.server().kill();
    auto st = co_await m.server().async_join(asio::use_awaitable);
    CHECK(st.signal == SIGKILL);
    char c = 'g';
    CHECK(::write(go[1], &c, 1) == 1);
    ::close(go[1]);
    auto cst = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
    CHECK(cst.code == 0);
    std::error_code ec;
    try {
      co_await d.async_get("x", asio::use_awaitable);
    } catch (const std::system_error& e) {
      ec = e.code();
    }
    CHECK(ec == coproc::errc::peer_died);
    CHECK(error_of([&] { d.set("y", 2); }) == coproc::errc::peer_died);
    CHECK(error_of([&] { (void)l.size(); }) == coproc::errc::peer_died);
  });
  CHECK(count_fds() == before);
}
