// Tests of coproc::connection across real processes: typed round trips, large
// messages both ways at once, peer death, corrupted and oversized frames,
// cancellation, fork use, fds.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <catch2/catch_message.hpp>
#include <catch2/catch_test_macros.hpp>
#include <coproc/ipc/pipe.hpp>
#include <coproc/runtime/child_process.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "async_test.hpp"

namespace {
// Counts the receive buffer's growth steps (the regression test below).
std::atomic<int> grow_steps{0};
void count_grow(std::size_t) noexcept {
  grow_steps.fetch_add(1, std::memory_order_relaxed);
}

using coproc::connection;
using coproc::errc;

std::size_t count_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

// Forks a child that runs `fn(child_end)` with the parent's end closed, and
// leaves with _exit (0, or 1 when fn threw). The parent's end is returned
// untouched; the child's end is closed in the parent.
template <class Fn>
coproc::child_process fork_peer(connection& parent_end, connection& child_end, Fn fn) {
  return coproc::child_process::fork_child([&]() -> int {
    parent_end.close();
    try {
      fn(child_end);
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  });
}

std::error_code error_of(auto&& body) {
  try {
    body();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

using record = std::tuple<int, std::string, std::vector<double>, std::map<std::string, int>,
                          std::optional<std::string>, std::variant<int, std::string>, bool>;

}  // namespace

TEST_CASE("messages of many types round trip through a child", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    auto child = fork_peer(a, b, [](connection& c) {
      c.send(c.receive<int>() + 1);
      c.send(c.receive<std::string>() + "!");
      c.send(c.receive<record>());
      auto v = c.receive<std::vector<int>>();
      c.send(v.size());
      c.send(std::string());  // an empty message
    });
    b.close();
    co_await a.async_send(41, asio::use_awaitable);
    auto got1 = co_await a.async_receive<int>(asio::use_awaitable);
    CHECK(got1 == 42);
    co_await a.async_send(std::string("hello"), asio::use_awaitable);
    auto got2 = co_await a.async_receive<std::string>(asio::use_awaitable);
    CHECK(got2 == "hello!");
    record r{7,   "seven", {1.5, 2.5}, {{"k", 1}, {"l", 2}}, std::string("x"), std::string("v"),
             true};
    co_await a.async_send(r, asio::use_awaitable);
    auto got3 = co_await a.async_receive<record>(asio::use_awaitable);
    CHECK(got3 == r);
    co_await a.async_send(std::vector<int>(100'000, 3), asio::use_awaitable);
    auto got4 = co_await a.async_receive<std::size_t>(asio::use_awaitable);
    CHECK(got4 == 100'000);
    auto got5 = co_await a.async_receive<std::string>(asio::use_awaitable);
    CHECK(got5.empty());
    auto st = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
    CHECK(st.success());
  });
}

TEST_CASE("64 MiB messages cross both ways at once without deadlock", "[pipe]") {
  coproc::test::run_async(
      [](asio::io_context& ctx) -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        // Named ends, not a structured binding: clang 14 cannot capture those.
        auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
        [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
        [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
        constexpr std::size_t n = (std::size_t{64} << 20) / sizeof(std::uint64_t);
        auto child = fork_peer(a, b, [](connection& c) {
          std::vector<std::uint64_t> mine(n);
          for (std::size_t i = 0; i < n; ++i) {
            mine[i] = i * 3;
          }
          // Blocking send first: it completes only because the parent reads while
          // it sends its own 64 MiB.
          c.send(mine);
          auto theirs = c.receive<std::vector<std::uint64_t>>();
          bool ok = theirs.size() == n;
          for (std::size_t i = 0; ok && i < n; i += 4097) {
            ok = theirs[i] == i * 7;
          }
          c.send(ok);
        });
        b.close();
        std::vector<std::uint64_t> mine(n);
        for (std::size_t i = 0; i < n; ++i) {
          mine[i] = i * 7;
        }
        auto theirs = co_await (a.async_send(mine, asio::use_awaitable) &&
                                a.async_receive<std::vector<std::uint64_t>>(asio::use_awaitable));
        REQUIRE(theirs.size() == n);
        bool ok = true;
        for (std::size_t i = 0; ok && i < n; i += 4097) {
          ok = theirs[i] == i * 3;
        }
        CHECK(ok);
        auto got6 = co_await a.async_receive<bool>(asio::use_awaitable);
        CHECK(got6);
        auto got7 = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
        CHECK(got7.success());
      },
      std::chrono::seconds(60));
}

TEST_CASE("a dead or closed peer gives end_of_stream", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    auto child = fork_peer(a, b, [](connection& c) {
      c.send(1);
      ::raise(SIGKILL);
    });
    b.close();
    auto got8 = co_await a.async_receive<int>(asio::use_awaitable);
    CHECK(got8 == 1);
    auto [ec, v] = co_await a.async_receive<int>(asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec == errc::end_of_stream);
    (void)v;
    auto [sec] = co_await a.async_send(5, asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(sec == errc::end_of_stream);
    CHECK(error_of([&] { a.send(std::string(1 << 20, 'x')); }) == errc::end_of_stream);
    CHECK(error_of([&] { (void)a.receive<int>(); }) == errc::end_of_stream);
    auto st = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
    CHECK(st.signal == SIGKILL);
  });
}

TEST_CASE("garbage bytes and bad payloads give frame_corrupt", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    {
      // Named ends, not a structured binding: clang 14 cannot capture those.
      auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
      [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
      [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
      const char garbage[] = "this is not a frame, just bytes";
      REQUIRE(::write(b.native_write_handle(), garbage, sizeof garbage) == sizeof garbage);
      auto [ec, v] =
          co_await a.async_receive<int>(asio::experimental::as_tuple(asio::use_awaitable));
      CHECK(ec == errc::frame_corrupt);
      (void)v;
    }
    {
      // A valid frame whose payload is a bool byte of 7, then a good frame:
      // the bad payload is consumed and the stream stays usable.
      // Named ends, not a structured binding: clang 14 cannot capture those.
      auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
      [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
      [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
      b.send(std::uint8_t{7});
      b.send(std::string("after"));
      CHECK(error_of([&] { (void)a.receive<bool>(); }) == errc::frame_corrupt);
      auto got9 = co_await a.async_receive<std::string>(asio::use_awaitable);
      CHECK(got9 == "after");
      // A payload longer than the type wants (trailing bytes) is corrupt too.
      b.send(std::uint64_t{1});
      auto [ec, v] = co_await a.async_receive<std::uint32_t>(
          asio::experimental::as_tuple(asio::use_awaitable));
      CHECK(ec == errc::frame_corrupt);
      (void)v;
    }
  });
}

TEST_CASE("frames above the maximum are refused without allocating", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor(), {.max_message_size = 1024});
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    // The sender refuses before writing anything.
    CHECK(error_of([&] { b.send(std::string(2000, 'x')); }) == errc::frame_too_large);
    auto [sec] = co_await b.async_send(std::string(2000, 'x'),
                                       asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(sec == errc::frame_too_large);
    b.send(std::string(10, 'y'));
    CHECK(a.receive<std::string>() == std::string(10, 'y'));
    // A forged header announcing 2^62 bytes: refused, nothing allocated.
    struct {
      std::uint32_t magic;
      std::int32_t cpu;
      std::uint64_t size;
    } h{coproc::detail::frame_magic, 0, std::uint64_t{1} << 62};
    REQUIRE(::write(b.native_write_handle(), &h, sizeof h) == sizeof h);
    auto [ec, v] =
        co_await a.async_receive<std::string>(asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec == errc::frame_too_large);
    (void)v;
  });
}

TEST_CASE("a writer killed mid-message leaves the reader with a clean error", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    auto child = fork_peer(a, b, [](connection& c) {
      c.send(std::vector<char>(std::size_t{64} << 20, 'z'));  // blocks: nobody reads yet
    });
    b.close();
    // Once bytes arrived the child is inside its 64 MiB send: kill it there.
    pollfd p{a.native_handle(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10'000) == 1);
    child.send_signal(SIGKILL);
    co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
    auto [ec, v] = co_await a.async_receive<std::vector<char>>(
        asio::experimental::as_tuple(asio::use_awaitable));
    CHECK((ec == errc::end_of_stream || ec == errc::frame_corrupt));
    CHECK(v.empty());
  });
}

TEST_CASE("a cancelled receive resumes the same message later", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    asio::steady_timer t(ctx, std::chrono::milliseconds(20));
    auto r = co_await (a.async_receive<std::string>(asio::use_awaitable) ||
                       t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);  // the timer won; the receive was withdrawn
    b.send(std::string("late"));
    auto got10 = co_await a.async_receive<std::string>(asio::use_awaitable);
    CHECK(got10 == "late");
  });
}

TEST_CASE("fds are close-on-exec and none leak", "[pipe]") {
  std::size_t before = count_fds();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    asio::post(ctx, [] {});
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    CHECK((::fcntl(a.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((::fcntl(b.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((::fcntl(a.native_write_handle(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((::fcntl(b.native_write_handle(), F_GETFD) & FD_CLOEXEC) != 0);
    co_await a.async_send(1, asio::use_awaitable);
    auto got11 = co_await b.async_receive<int>(asio::use_awaitable);
    CHECK(got11 == 1);
    // A receive pending when its connection is closed completes with
    // operation_aborted; nothing leaks.
    std::error_code pending_ec;
    a.async_receive<int>([&](std::error_code ec, int) { pending_ec = ec; });
    a.close();
    asio::steady_timer t(ctx, std::chrono::milliseconds(1));
    while (!pending_ec) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    CHECK(pending_ec == asio::error::operation_aborted);
    co_return;
  });
  CHECK(count_fds() == before);
}

TEST_CASE("an async send to a closed peer is end_of_stream, never SIGPIPE", "[pipe]") {
  // SIGPIPE keeps its default action here: a write that raised it would kill
  // the test. The first send fills the pipe, so the ring waits for room.
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    std::error_code send_ec;
    bool done = false;
    a.async_send(std::string(std::size_t{1} << 20, 'q'), [&](std::error_code ec) {
      send_ec = ec;
      done = true;
    });
    co_await asio::post(ctx, asio::use_awaitable);  // the send now waits in the ring
    b.close();
    asio::steady_timer t(ctx);
    while (!done) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    CHECK(send_ec == errc::end_of_stream);
    auto [ec2] = co_await a.async_send(1, asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec2 == errc::end_of_stream);
    CHECK(error_of([&] { a.send(2); }) == errc::end_of_stream);
  });
}

TEST_CASE("a connection over a socket (one fd) still works both ways", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    connection a(ctx.get_executor(), coproc::unique_fd(fds[0]));
    connection b(ctx.get_executor(), coproc::unique_fd(fds[1]));
    CHECK(a.native_handle() == a.native_write_handle());
    auto child = fork_peer(a, b, [](connection& c) {
      for (int i = 0; i < 3; ++i) {
        c.send(c.receive<std::string>() + "!");
      }
    });
    b.close();
    co_await a.async_send(std::string("x"), asio::use_awaitable);
    auto r1 = co_await a.async_receive<std::string>(asio::use_awaitable);
    CHECK(r1 == "x!");
    a.send(std::string(std::size_t{1} << 20, 'y'));  // above the socket buffer
    auto r2 = a.receive<std::string>();
    CHECK(r2.size() == (std::size_t{1} << 20) + 1);
    a.send(std::string("z"));
    auto r3 = co_await a.async_receive<std::string>(asio::use_awaitable);
    CHECK(r3 == "z!");
    auto st = co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
    CHECK(st.success());
  });
}

TEST_CASE("a large frame grows the receive buffer a few times, not once per read", "[pipe]") {
  // Regression: the buffer was regrown (and the frame so far copied) on
  // every read once it passed 1 MiB, so 64 MiB took seconds.
  asio::io_context ctx;
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
  [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
  [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
  std::vector<char> sent(std::size_t{32} << 20, 'g');
  for (std::size_t i = 0; i < sent.size(); i += 4096) {
    sent[i] = static_cast<char>(i / 4096);  // a byte moved to the wrong place shows
  }
  std::thread t([&] { b.send(sent); });
  grow_steps = 0;
  coproc::detail::receive_buffer::on_grow = count_grow;
  auto got = a.receive<std::vector<char>>();
  coproc::detail::receive_buffer::on_grow = nullptr;
  t.join();
  CHECK(got == sent);
  // Doubling from 1 MiB to 32 MiB: about 6 steps (plus the first 64 KiB).
  // Regrown on every read past 1 MiB, it was hundreds.
  INFO("receive buffer growth steps: " << grow_steps.load());
  CHECK(grow_steps.load() >= 1);
  CHECK(grow_steps.load() <= 10);
}

TEST_CASE("an async send cancelled mid-frame ends the stream for the peer", "[pipe]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto a_b_ends = coproc::make_connection_pair(ctx.get_executor());
    [[maybe_unused]] auto& a = std::get<0>(a_b_ends);
    [[maybe_unused]] auto& b = std::get<1>(a_b_ends);
    // Nobody reads: part of the 1 MiB frame fits the pipe, the rest waits in
    // the ring until the timer withdraws it.
    asio::steady_timer t(ctx, std::chrono::milliseconds(20));
    auto r = co_await (a.async_send(std::string(std::size_t{1} << 20, 'm'), asio::use_awaitable) ||
                       t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);
    // The peer sees the frame cut short, then the end; never a hang.
    // (Regression, with "a dead or closed peer gives end_of_stream": a send
    // right after the end was seen could find the dead peer's read end not yet
    // released and succeed.)
    CHECK(error_of([&] { (void)b.receive<std::string>(); }) == errc::end_of_stream);
    // Neither end can send any more: the connection is out of step.
    CHECK(error_of([&] { a.send(1); }) == errc::end_of_stream);
    CHECK(error_of([&] { b.send(2); }) == errc::end_of_stream);
  });
}
