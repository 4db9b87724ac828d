// Issue 13, items 12, 13 and 14: hosts that fork, run out of fds, or reap
// children themselves. A plain fork() child must not tear down its parent's
// pool; a constructor that meets EMFILE says so; async_join names the cause
// when the host's SIGCHLD setting or a waitpid(-1) took the status away.

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <catch2/catch_test_macros.hpp>
#include <cerrno>
#include <chrono>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process.hpp"
#include "coproc/executors/process_pool.hpp"
#include "isolated_run.hpp"
#include "reliability_support.hpp"

namespace {

using coproc::process_pool;

int twice(int x) {
  return 2 * x;
}

void exit_three() {
  ::_exit(3);
}

/// Exits with 3 once `fd` has a byte (or its writer closed it).
void exit_three_when_told(int fd) {
  char byte = 0;
  [[maybe_unused]] auto n = ::read(fd, &byte, 1);
  ::_exit(3);
}

/// Blocks until `pid` (a child of this process) has exited, without reaping it.
void wait_exited(pid_t pid) {
  siginfo_t info{};
  ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT);
}

}  // namespace

TEST_CASE("a pool destroyed in a plain fork() child leaves the parent's pool running",
          "[reliability][host_setup]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    std::optional<process_pool> pool;
    pool.emplace(ctx.get_executor(), coproc::pool_options{.workers = 2});
    co_await pool->submit(twice, 1);
    co_await pool->submit(twice, 2);
    std::vector<pid_t> workers = pool->stats().worker_pids;
    std::vector<pid_t> zygote = coproc::test::children_named(::getpid(), "coproc-zygote");
    REQUIRE(zygote.size() == 1);
    pid_t child = ::fork();
    if (child == 0) {
      pool.reset();  // what a daemonizing host's exit path or a forked helper does
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(coproc::test::alive(zygote[0]));
    for (pid_t w : workers) {
      CHECK(coproc::test::alive(w));
    }
    CHECK(co_await pool->submit(twice, 21) == 42);
    std::vector<pid_t> after = pool->stats().worker_pids;
    for (pid_t w : workers) {  // the same workers: none was killed
      CHECK(std::find(after.begin(), after.end(), w) != after.end());
    }
  });
}

TEST_CASE("a pool constructor that meets RLIMIT_NOFILE reports the call and EMFILE",
          "[reliability][host_setup]") {
  auto out = coproc::test::run_isolated([] {
    asio::io_context ctx;
    {
      // The loop's own fds (its ring, its wake-up eventfd) come with the first
      // pool and stay: open them before counting.
      process_pool first(ctx.get_executor(), {.workers = 1});
    }
    std::size_t open = coproc::test::count_fds();
    int failures = 0;
    // Every limit from "no fd left" to "enough": each failing call must be
    // named with EMFILE, and a failed constructor leaves no fd behind.
    for (std::size_t extra = 0; extra < 16; ++extra) {
      std::size_t before = coproc::test::count_fds();
      rlimit low{static_cast<rlim_t>(open + extra), 4096};
      ::setrlimit(RLIMIT_NOFILE, &low);
      try {
        process_pool pool(ctx.get_executor(), {.workers = 1});
      } catch (const std::system_error& e) {
        std::string what = e.what();
        bool named =
            e.code() == std::errc::too_many_files_open && what.find("assign") == std::string::npos;
        if (!named) {
          std::fprintf(stderr, "limit +%zu: %s (%s)\n", extra, what.c_str(),
                       e.code().message().c_str());
          ++failures;
        }
      }
      rlimit high{4096, 4096};
      ::setrlimit(RLIMIT_NOFILE, &high);
      if (coproc::test::count_fds() != before) {
        std::fprintf(stderr, "limit +%zu: %zu fds before, %zu after\n", extra, before,
                     coproc::test::count_fds());
        ++failures;
      }
    }
    return failures == 0 ? 0 : 2;
  });
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("async_join names the cause when the host ignores SIGCHLD", "[reliability][host_setup]") {
  auto out = coproc::test::run_isolated([] {
    ::signal(SIGCHLD, SIG_IGN);
    int result = 0;
    coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
      // The child waits for a byte: with SIGCHLD ignored, a child that ended
      // at once would be reaped before start() could open its pidfd.
      int go[2];
      if (::pipe(go) != 0) {
        result = 3;
        co_return;
      }
      coproc::process child(ctx.get_executor(), exit_three_when_told, go[0]);
      child.start();
      char one = 1;
      [[maybe_unused]] auto n = ::write(go[1], &one, 1);
      auto [ec, status] =
          co_await child.async_join(asio::experimental::as_tuple(asio::use_awaitable));
      std::string what = ec.message();
      std::fprintf(stderr, "SIG_IGN: %s\n", what.c_str());
      result = ec && what.find("SIGCHLD") != std::string::npos ? 0 : 2;
    });
    return result;
  });
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("async_join names the cause when the host reaped the child with waitpid(-1)",
          "[reliability][host_setup]") {
  int result = 0;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process child(ctx.get_executor(), exit_three);
    child.start();
    wait_exited(child.pid());
    int status = 0;
    REQUIRE(::waitpid(-1, &status, 0) == child.pid());  // the host's own reaper
    auto [ec, st] = co_await child.async_join(asio::experimental::as_tuple(asio::use_awaitable));
    INFO("async_join: " << ec.message());
    CHECK(ec);
    CHECK(ec.message().find("waitpid") != std::string::npos);
    (void)st;
    result = 1;
  });
  CHECK(result == 1);
}
