// Tests of uring_service, pipe_reader and pipe_writer: the ring bridged into
// an asio::io_context through its eventfd.

#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/deferred.hpp>
#include <catch2/catch_test_macros.hpp>
#include <coproc/runtime/child_process.hpp>
#include <coproc/runtime/errc.hpp>
#include <coproc/runtime/pipe_reader.hpp>
#include <coproc/runtime/pipe_writer.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "async_test.hpp"

namespace {

int count_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') {
      ++n;
    }
  }
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

// Child side of an echo: reads blocks and writes them back until EOF.
[[noreturn]] void echo_child(int in, int out) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n <= 0) {
      ::_exit(n == 0 ? 0 : 1);
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out, buf + done, static_cast<size_t>(n - done));
      if (w <= 0) {
        ::_exit(2);
      }
      done += w;
    }
  }
}

}  // namespace

TEST_CASE("pipe echo through the ring with a forked child", "[uring_service]") {
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto to_child_r_to_child_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& to_child_r = std::get<0>(to_child_r_to_child_w_ends);
  [[maybe_unused]] auto& to_child_w = std::get<1>(to_child_r_to_child_w_ends);
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto from_child_r_from_child_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& from_child_r = std::get<0>(from_child_r_from_child_w_ends);
  [[maybe_unused]] auto& from_child_w = std::get<1>(from_child_r_from_child_w_ends);
  auto child = coproc::child_process::fork_child([&] {
    to_child_w.reset();
    from_child_r.reset();
    echo_child(to_child_r.get(), from_child_w.get());
  });
  to_child_r.reset();
  from_child_w.reset();

  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::pipe_writer out(ctx.get_executor(), std::move(to_child_w));
    coproc::pipe_reader in(ctx.get_executor(), std::move(from_child_r));
    for (int i = 0; i < 100; ++i) {
      std::string msg = "message " + std::to_string(i);
      co_await asio::async_write(out, asio::buffer(msg), asio::use_awaitable);
      std::string got(msg.size(), '\0');
      co_await asio::async_read(in, asio::buffer(got), asio::use_awaitable);
      CHECK(got == msg);
    }
    out.close();  // the child sees EOF and exits 0
    std::array<char, 8> buf{};
    auto [ec, n] = co_await in.async_read_some(asio::buffer(buf),
                                               asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec == asio::error::eof);
    CHECK(n == 0);
    auto [wec, st] = co_await child.async_wait_exit(
        ctx.get_executor(), asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(!wec);
    CHECK(st.exited);
    CHECK(st.code == 0);
  });
}

TEST_CASE("a short read returns what is there", "[uring_service]") {
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  REQUIRE(::write(w.get(), "0123456789", 10) == 10);
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::pipe_reader in(ctx.get_executor(), std::move(r));
    std::array<char, 100> buf{};
    std::size_t n = co_await in.async_read_some(asio::buffer(buf), asio::use_awaitable);
    CHECK(n == 10);
    CHECK(std::string(buf.data(), n) == "0123456789");
    // Two buffers (READV): a write of 6 lands in both.
    REQUIRE(::write(w.get(), "abcdef", 6) == 6);
    std::array<char, 4> a{};
    std::array<char, 4> b{};
    std::array<asio::mutable_buffer, 2> bufs{asio::buffer(a), asio::buffer(b)};
    n = co_await in.async_read_some(bufs, asio::use_awaitable);
    CHECK(n == 6);
    CHECK(std::string(a.data(), 4) == "abcd");
    CHECK(std::string(b.data(), 2) == "ef");
    // An empty buffer sequence completes with 0 bytes, not eof.
    n = co_await in.async_read_some(asio::mutable_buffer(), asio::use_awaitable);
    CHECK(n == 0);
  });
}

TEST_CASE("16 MiB through async_write and async_read concurrently", "[uring_service]") {
  constexpr std::size_t size = 16u << 20;
  std::vector<unsigned char> out(size);
  for (std::size_t i = 0; i < size; ++i) {
    out[i] = static_cast<unsigned char>((i * 131) >> 7);
  }
  std::vector<unsigned char> in(size);
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  asio::io_context ctx;
  coproc::pipe_reader reader(ctx.get_executor(), std::move(r));
  coproc::pipe_writer writer(ctx.get_executor(), std::move(w));
  std::error_code wec = asio::error::would_block;
  std::error_code rec = asio::error::would_block;
  std::size_t written = 0;
  std::size_t read = 0;
  asio::async_write(writer, asio::buffer(out), [&](std::error_code ec, std::size_t n) {
    wec = ec;
    written = n;
  });
  asio::async_read(reader, asio::buffer(in), [&](std::error_code ec, std::size_t n) {
    rec = ec;
    read = n;
  });
  ctx.run_for(std::chrono::seconds(60));
  CHECK(!wec);
  CHECK(!rec);
  CHECK(written == size);
  CHECK(read == size);
  CHECK(in == out);
}

TEST_CASE("a cancelled pending read completes with operation_aborted and leaks nothing",
          "[uring_service]") {
  int fds_before = count_fds();
  {
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto r_w_ends = coproc::make_pipe();
    [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
    [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
    asio::io_context ctx;
    coproc::pipe_reader reader(ctx.get_executor(), std::move(r));
    asio::cancellation_signal signal;
    std::array<char, 16> buf{};
    std::error_code result;
    bool done = false;
    reader.async_read_some(
        asio::buffer(buf),
        asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, std::size_t) {
          result = ec;
          done = true;
        }));
    // Let the read reach the kernel (one turn submits it), then cancel it.
    ctx.poll();
    CHECK(!done);
    signal.emit(asio::cancellation_type::terminal);
    CHECK(!done);  // never inline from the emitter
    ctx.run_for(std::chrono::seconds(10));
    CHECK(done);
    CHECK(result == asio::error::operation_aborted);

    // A read pending when the reader is destroyed is cancelled too.
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto r2_w2_ends = coproc::make_pipe();
    [[maybe_unused]] auto& r2 = std::get<0>(r2_w2_ends);
    [[maybe_unused]] auto& w2 = std::get<1>(r2_w2_ends);
    bool done2 = false;
    std::error_code result2;
    {
      coproc::pipe_reader reader2(ctx.get_executor(), std::move(r2));
      reader2.async_read_some(asio::buffer(buf), [&](std::error_code ec, std::size_t) {
        result2 = ec;
        done2 = true;
      });
      ctx.restart();
      ctx.poll();
    }
    ctx.restart();
    ctx.run_for(std::chrono::seconds(10));
    CHECK(done2);
    CHECK(result2 == asio::error::operation_aborted);

    // And one still pending when the io_context dies is destroyed, not run.
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto r3_w3_ends = coproc::make_pipe();
    [[maybe_unused]] auto& r3 = std::get<0>(r3_w3_ends);
    [[maybe_unused]] auto& w3 = std::get<1>(r3_w3_ends);
    coproc::pipe_reader reader3(ctx.get_executor(), std::move(r3));
    reader3.async_read_some(asio::buffer(buf), [&](std::error_code, std::size_t) { FAIL(); });
    ctx.restart();
    ctx.poll();
  }
  CHECK(count_fds() == fds_before);
}

TEST_CASE("the io_context may run on another thread than the creator's", "[uring_service]") {
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  asio::io_context ctx;
  coproc::uring_service::of(ctx.get_executor());  // created on this thread
  auto guard = asio::make_work_guard(ctx);
  std::thread runner([&] { ctx.run(); });
  coproc::pipe_reader reader(ctx.get_executor(), std::move(r));
  coproc::pipe_writer writer(ctx.get_executor(), std::move(w));
  for (int i = 0; i < 50; ++i) {
    std::array<char, 8> buf{};
    // Both started from this thread, completed on the runner's.
    auto read = reader.async_read_some(asio::buffer(buf), asio::use_future);
    auto wrote = writer.async_write_some(asio::buffer("ping", 4), asio::use_future);
    CHECK(wrote.get() == 4);
    CHECK(read.get() == 4);
    CHECK(std::string(buf.data(), 4) == "ping");
  }
  guard.reset();
  runner.join();
}

TEST_CASE("200 service lifetimes leave the fd count unchanged", "[uring_service]") {
  int fds_before = count_fds();
  for (int i = 0; i < 200; ++i) {
    asio::io_context ctx;
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto r_w_ends = coproc::make_pipe();
    [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
    [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
    coproc::pipe_reader reader(ctx.get_executor(), std::move(r));
    coproc::pipe_writer writer(ctx.get_executor(), std::move(w));
    std::array<char, 4> buf{};
    std::size_t got = 0;
    reader.async_read_some(asio::buffer(buf), [&](std::error_code, std::size_t n) { got = n; });
    writer.async_write_some(asio::buffer("abc", 3), [](std::error_code, std::size_t) {});
    ctx.run();
    REQUIRE(got == 3);
  }
  CHECK(count_fds() == fds_before);
}

TEST_CASE("use_future and deferred tokens work", "[uring_service]") {
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  asio::io_context ctx;
  coproc::pipe_reader reader(ctx.get_executor(), std::move(r));
  coproc::pipe_writer writer(ctx.get_executor(), std::move(w));
  std::array<char, 8> buf{};
  auto deferred_read = reader.async_read_some(asio::buffer(buf), asio::experimental::deferred);
  std::future<std::size_t> wrote =
      writer.async_write_some(asio::buffer("xyz", 3), asio::use_future);
  std::size_t got = 0;
  std::move(deferred_read)([&](std::error_code ec, std::size_t n) {
    CHECK(!ec);
    got = n;
  });
  ctx.run();
  CHECK(wrote.get() == 3);
  CHECK(got == 3);
  CHECK(std::string(buf.data(), 3) == "xyz");
}

TEST_CASE("the service refuses a context that is not an io_context", "[uring_service]") {
  asio::thread_pool pool(1);
  CHECK_THROWS_AS(coproc::uring_service::of(pool.get_executor()), std::invalid_argument);
  pool.join();
}
