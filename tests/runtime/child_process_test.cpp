// Tests of child_process and exit_status: exit codes, signals, rusage, the
// WAITID path and the POLL_ADD-on-pidfd fallback, cancellation, no zombies.

#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <coproc/runtime/child_process.hpp>
#include <coproc/runtime/pipe_reader.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <cstring>
#include <vector>

#include "async_test.hpp"

namespace {

using coproc::child_process;
using coproc::exit_status;

// Runs `body` with a service using WAITID (when the kernel has it) or forced
// onto the POLL_ADD fallback.
template <class Body>
void with_service(bool use_waitid, Body body) {
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    auto& service = coproc::uring_service::install(ctx, {.use_waitid = use_waitid});
    if (!use_waitid) {
      CHECK(!service.has_waitid());
    }
    co_await body(ctx);
  });
}

asio::awaitable<exit_status> wait_exit(asio::io_context& ctx, child_process& child) {
  co_return co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
}

[[noreturn]] void block_forever(int fd) {
  char c;
  while (::read(fd, &c, 1) != 0) {
  }
  ::_exit(0);
}

}  // namespace

TEST_CASE("exit_status describes itself", "[child_process]") {
  CHECK(exit_status{.exited = true, .code = 3}.describe() == "exited with status 3");
  CHECK(exit_status{.signal = 9}.describe() == "killed by signal 9 (SIGKILL)");
  CHECK(exit_status{.signal = 11, .core_dumped = true}.describe() ==
        "killed by signal 11 (SIGSEGV), core dumped");
}

TEST_CASE("exit wait reports the exit code and peak memory", "[child_process]") {
  bool use_waitid = GENERATE(true, false);
  with_service(use_waitid, [](asio::io_context& ctx) -> asio::awaitable<void> {
    auto child = child_process::fork_child([] {
      std::vector<char> big(64u << 20);
      // Every page written through a volatile pointer: the optimizer must
      // keep those writes. With a memset and one byte read, clang elided the
      // whole vector (peak 2 MB; 18 MB under TSan, measured).
      volatile char* p = big.data();
      for (std::size_t i = 0; i < big.size(); i += 4096) {
        p[i] = 1;
      }
      return p[4096 * 3] + 2;  // 3
    });
    exit_status st = co_await wait_exit(ctx, child);
    CHECK(st.exited);
    CHECK(st.code == 3);
    CHECK(st.max_rss_kb >= 64 * 1024);
    CHECK(st.describe() == "exited with status 3");
    CHECK(child.status().has_value());
  });
}

TEST_CASE("exit wait reports SIGKILL sent through the pidfd", "[child_process]") {
  bool use_waitid = GENERATE(true, false);
  with_service(use_waitid, [](asio::io_context& ctx) -> asio::awaitable<void> {
    // Named ends, not a structured binding: clang 14 cannot capture those.
    auto r_w_ends = coproc::make_pipe();
    [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
    [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
    auto child = child_process::fork_child([&, rfd = r.get()] {
      w.reset();
      block_forever(rfd);
    });
    child.send_signal(SIGKILL);
    exit_status st = co_await wait_exit(ctx, child);
    CHECK(!st.exited);
    CHECK(st.signal == SIGKILL);
    CHECK(st.describe() == "killed by signal 9 (SIGKILL)");
    child.send_signal(SIGKILL);  // after the reap: not an error
  });
}

TEST_CASE("exit wait reports SIGSEGV", "[child_process]") {
  bool use_waitid = GENERATE(true, false);
  with_service(use_waitid, [](asio::io_context& ctx) -> asio::awaitable<void> {
    auto child = child_process::fork_child([] {
      rlimit no_core{0, 0};
      ::setrlimit(RLIMIT_CORE, &no_core);
      ::signal(SIGSEGV, SIG_DFL);  // Catch2's handler was inherited through fork
      ::raise(SIGSEGV);
    });
    exit_status st = co_await wait_exit(ctx, child);
    CHECK(!st.exited);
    CHECK(st.signal == SIGSEGV);
  });
}

TEST_CASE("adopt and a child created with exit_signal 0 (clone3)", "[child_process]") {
  bool use_waitid = GENERATE(true, false);
  with_service(use_waitid, [](asio::io_context& ctx) -> asio::awaitable<void> {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::_exit(7);
    }
    auto forked = child_process::adopt(pid);
    exit_status st = co_await wait_exit(ctx, forked);
    CHECK(st.code == 7);

    // No SIGCHLD on exit: only __WALL waits see this child.
    clone_args args{};
    args.exit_signal = 0;
    long rc = ::syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) {
      ::_exit(9);
    }
    REQUIRE(rc > 0);
    auto cloned = child_process::adopt(static_cast<pid_t>(rc));
    st = co_await wait_exit(ctx, cloned);
    CHECK(st.exited);
    CHECK(st.code == 9);
  });
}

TEST_CASE("several children are waited for concurrently", "[child_process]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    std::vector<child_process> children;
    for (int i = 0; i < 8; ++i) {
      children.push_back(child_process::fork_child([i] { return i; }));
    }
    std::vector<int> codes(children.size(), -1);
    int done = 0;
    for (std::size_t i = 0; i < children.size(); ++i) {
      children[i].async_wait_exit(ctx.get_executor(), [&, i](std::error_code ec, exit_status st) {
        CHECK(!ec);
        codes[i] = st.code;
        ++done;
      });
    }
    asio::steady_timer t(ctx);
    while (done < 8) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    for (int i = 0; i < 8; ++i) {
      CHECK(codes[static_cast<std::size_t>(i)] == i);
    }
  });
}

TEST_CASE("an exit wait can be cancelled and started again", "[child_process]") {
  bool use_waitid = GENERATE(true, false);
  asio::io_context ctx;
  coproc::uring_service::install(ctx, {.use_waitid = use_waitid});
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  auto child = child_process::fork_child([&, rfd = r.get()] {
    w.reset();
    block_forever(rfd);
  });
  asio::cancellation_signal signal;
  std::error_code first;
  bool first_done = false;
  child.async_wait_exit(
      ctx.get_executor(),
      asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, exit_status) {
        first = ec;
        first_done = true;
      }));
  ctx.poll();
  CHECK(!first_done);
  signal.emit(asio::cancellation_type::terminal);
  ctx.run_for(std::chrono::seconds(10));
  REQUIRE(first_done);
  CHECK(first == asio::error::operation_aborted);
  CHECK(!child.status().has_value());

  w.reset();  // the child reads EOF and exits 0
  auto fut = child.async_wait_exit(ctx.get_executor(), asio::use_future);
  ctx.restart();
  ctx.run_for(std::chrono::seconds(10));
  exit_status st = fut.get();
  CHECK(st.exited);
  CHECK(st.code == 0);
}

TEST_CASE("destroying an unreaped child kills and reaps it: no zombie", "[child_process]") {
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  pid_t pid;
  {
    auto child = child_process::fork_child([&, rfd = r.get()] {
      w.reset();
      block_forever(rfd);
    });
    pid = child.pid();
  }
  // The pid is already reaped: waitpid knows no such child.
  CHECK(::waitpid(pid, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
}

TEST_CASE("destroying a child while its exit wait is pending", "[child_process]") {
  asio::io_context ctx;
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto r_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& r = std::get<0>(r_w_ends);
  [[maybe_unused]] auto& w = std::get<1>(r_w_ends);
  std::optional<child_process> child = child_process::fork_child([&, rfd = r.get()] {
    w.reset();
    block_forever(rfd);
  });
  std::error_code result = asio::error::would_block;
  exit_status status;
  child->async_wait_exit(ctx.get_executor(), [&](std::error_code ec, exit_status st) {
    result = ec;
    status = st;
  });
  ctx.poll();
  child.reset();  // SIGKILL + blocking reap; the pending wait then reports it
  ctx.run_for(std::chrono::seconds(10));
  CHECK(!result);
  CHECK(status.signal == SIGKILL);
}
