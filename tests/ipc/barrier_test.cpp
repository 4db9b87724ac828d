#include "coproc/ipc/barrier.hpp"

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <set>
#include <thread>

#include "async_test.hpp"
#include "coproc/ipc/shared_array.hpp"
#include "sync_test_support.hpp"

using namespace std::chrono_literals;
using coproc::test::fork_child;
using coproc::test::wait_child;

TEST_CASE("three parties meet: two children blocking, the parent async", "[barrier]") {
  coproc::barrier b(3);
  coproc::shared_array<int, coproc::no_lock> idx(3);
  auto party = [&](int slot) {
    return [&, slot] {
      for (int round = 0; round < 50; ++round) {
        idx[slot] = static_cast<int>(b.wait());
      }
      return 0;
    };
  };
  pid_t a = fork_child(party(0));
  pid_t c = fork_child(party(1));
  std::size_t mine = 0;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    for (int round = 0; round < 50; ++round) {
      auto [ec, i] = co_await b.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      REQUIRE(!ec);
      mine = i;
    }
  });
  CHECK(wait_child(a) == 0);
  CHECK(wait_child(c) == 0);
  idx[2] = static_cast<int>(mine);
  std::set<int> seen{idx[0], idx[1], idx[2]};
  CHECK(seen == std::set<int>{0, 1, 2});
  CHECK(!b.broken());
}

TEST_CASE("a timed-out party breaks the barrier until reset", "[barrier]") {
  coproc::barrier b(2);
  CHECK_THROWS_AS(b.wait_for(20ms), std::system_error);
  CHECK(b.broken());
  try {
    b.wait();
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::barrier_broken);
  }
  b.reset();
  CHECK(!b.broken());
  pid_t pid = fork_child([&] { return b.wait() < 2 ? 0 : 1; });
  CHECK(b.wait() < 2);
  CHECK(wait_child(pid) == 0);
}

TEST_CASE("abort wakes a waiting child with barrier_broken; cancel breaks it too", "[barrier]") {
  coproc::barrier b(2);
  pid_t pid = fork_child([&] {
    try {
      b.wait();
    } catch (const std::system_error& e) {
      return e.code() == coproc::errc::barrier_broken ? 0 : 2;
    }
    return 1;
  });
  while (b.n_waiting() == 0) {
    std::this_thread::yield();
  }
  b.abort();
  CHECK(wait_child(pid) == 0);
  b.reset();
  std::error_code got;
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    asio::cancellation_signal sig;
    asio::steady_timer t(co_await asio::this_coro::executor, 10ms);
    t.async_wait([&](std::error_code) { sig.emit(asio::cancellation_type::terminal); });
    auto [ec, i] = co_await b.async_wait(asio::bind_cancellation_slot(
        sig.slot(), asio::experimental::as_tuple(asio::use_awaitable)));
    got = ec;
  });
  CHECK(got == asio::error::operation_aborted);
  CHECK(b.broken());
}
