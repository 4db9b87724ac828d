// Issue 13, items 5, 9 and 10: tasks that misbehave in ordinary ways against
// their own process. Only the task fails; the host survives and the pool goes
// on. Each check that could kill or hang the host runs in a forked host
// (isolated_run.hpp).

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <new>
#include <system_error>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/mapped_region.hpp"
#include "isolated_run.hpp"
#include "reliability_support.hpp"

namespace {

using coproc::process_pool;

int twice(int x) {
  return 2 * x;
}

pid_t own_pid() {
  return ::getpid();
}

/// Closes every fd a process usually has, then returns normally.
int close_every_fd() {
  for (int fd = 0; fd < 1024; ++fd) {
    ::close(fd);
  }
  return 11;
}

/// Sends SIGTERM to its own process group.
int terminate_group() {
  ::kill(0, SIGTERM);
  for (;;) {
    ::pause();  // SIGTERM's default action ends this process
  }
}

/// Grandchildren forked by tasks: pids published here, in memory the host
/// maps before its pool exists (the workers inherit it).
struct lineage {
  std::atomic<std::int32_t> child{0};
  std::atomic<std::int32_t> grandchild{0};
};
lineage* family = nullptr;

/// Forks a child that sleeps for ever and a grandchild that detaches from it
/// (the child exits at once, the grandchild starts its own session), then
/// returns: both must go when the worker is replaced or stopped.
int fork_lingering() {
  pid_t child = ::fork();
  if (child == 0) {
    pid_t grandchild = ::fork();
    if (grandchild == 0) {
      ::setsid();
      family->grandchild.store(::getpid());
      for (;;) {
        ::pause();
      }
    }
    for (;;) {
      ::pause();
    }
  }
  family->child.store(child);
  while (family->grandchild.load() == 0) {
    sched_yield();
  }
  return 1;
}

int die_now() {
  ::raise(SIGKILL);
  return 0;
}

/// Waits up to `limit` until `pid` runs no more (gone or a zombie).
bool ends_within(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!coproc::test::gone_or_zombie(pid)) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    timespec pause{0, 1'000'000};  // polling a process state, not ordering events
    ::nanosleep(&pause, nullptr);
  }
  return true;
}

}  // namespace

TEST_CASE("a task that closes every fd fails alone; its worker is replaced and the next task runs",
          "[reliability][hostile_task]") {
  auto out = coproc::test::run_isolated(
      [] {
        int result = 0;
        coproc::test::run_async(
            [&](asio::io_context& ctx) -> asio::awaitable<void> {
              process_pool pool(ctx.get_executor(), {.workers = 1});
              try {
                (void)co_await pool.submit(close_every_fd);  // its value, or worker_crashed
              } catch (const std::system_error& e) {
                result = e.code() == coproc::errc::worker_crashed ? 0 : 2;
              }
              for (int i = 0; i < 4; ++i) {
                if (co_await pool.submit(twice, i) != 2 * i) {
                  result = 3;
                }
              }
            },
            std::chrono::seconds(10));
        return result;
      },
      std::chrono::seconds(20));
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("a task's kill(0, SIGTERM) reaches neither the host nor the zygote",
          "[reliability][hostile_task]") {
  auto out = coproc::test::run_isolated(
      [] {
        ::signal(SIGTERM, SIG_DFL);
        ::setpgid(0,
                  0);  // the host's group: a SIGTERM that leaks out must not reach the test runner
        int result = 0;
        coproc::test::run_async(
            [&](asio::io_context& ctx) -> asio::awaitable<void> {
              process_pool pool(ctx.get_executor(), {.workers = 2});
              co_await pool.submit(twice, 1);
              std::vector<pid_t> zygote = coproc::test::children_named(::getpid(), "coproc-zygote");
              try {
                co_await pool.submit(terminate_group);
                result = 2;
              } catch (const std::system_error& e) {
                result = e.code() == coproc::errc::worker_crashed ? 0 : 3;
              }
              if (zygote != coproc::test::children_named(::getpid(), "coproc-zygote")) {
                result = 4;  // the zygote died of it
              }
              for (int i = 0; i < 4; ++i) {
                if (co_await pool.submit(twice, i) != 2 * i) {
                  result = 5;
                }
              }
            },
            std::chrono::seconds(10));
        return result;
      },
      std::chrono::seconds(20));
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("workers are named coproc-worker, the zygote coproc-zygote",
          "[reliability][hostile_task]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    // Workers that ran a task (one listed by stats() may not have named
    // itself yet).
    pid_t first = co_await pool.submit(own_pid);
    pid_t second = co_await pool.submit(own_pid);
    std::vector<pid_t> zygote = coproc::test::children_named(::getpid(), "coproc-zygote");
    REQUIRE(zygote.size() == 1);
    CHECK(coproc::test::comm_of(first) == "coproc-worker");
    CHECK(coproc::test::comm_of(second) == "coproc-worker");
  });
}

TEST_CASE("a replaced worker takes the processes its task forked with it",
          "[reliability][hostile_task]") {
  coproc::mapped_region shared = coproc::mapped_region::create(4096);
  family = new (shared.data()) lineage;
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    co_await pool.submit(fork_lingering);
    pid_t child = family->child.load();
    pid_t grandchild = family->grandchild.load();
    REQUIRE(child > 0);
    REQUIRE(grandchild > 0);
    CHECK_FALSE(coproc::test::gone_or_zombie(grandchild));
    try {
      co_await pool.submit(die_now);  // the worker dies; its replacement runs the next task
    } catch (const std::system_error&) {
    }
    CHECK(co_await pool.submit(twice, 3) == 6);
    CHECK(ends_within(child, std::chrono::seconds(1)));
    CHECK(ends_within(grandchild, std::chrono::seconds(1)));
    ::kill(child, SIGKILL);  // leave nothing behind when the check failed
    ::kill(grandchild, SIGKILL);
  });
}

TEST_CASE("a destroyed pool takes the processes its tasks forked with it",
          "[reliability][hostile_task]") {
  coproc::mapped_region shared = coproc::mapped_region::create(4096);
  family = new (shared.data()) lineage;
  pid_t child = 0;
  pid_t grandchild = 0;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    co_await pool.submit(fork_lingering);
    child = family->child.load();
    grandchild = family->grandchild.load();
  });
  REQUIRE(grandchild > 0);
  CHECK(ends_within(child, std::chrono::seconds(1)));
  CHECK(ends_within(grandchild, std::chrono::seconds(1)));
  ::kill(child, SIGKILL);
  ::kill(grandchild, SIGKILL);
}

namespace {

void drop_to_nobody() {
  if (::getuid() == 0) {
    [[maybe_unused]] int rc = ::setuid(65534);
  }
}

int clear_death_signal() {
  ::prctl(PR_SET_PDEATHSIG, 0);
  return 1;
}

/// Live children of `parent`.
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (pid_t p : coproc::test::all_pids()) {
    coproc::test::proc_stat s = coproc::test::read_stat(p);
    if (s.ppid == parent && s.state != "Z" && !s.state.empty()) {
      out.push_back(p);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("a worker whose death signal was cleared leaves within 1 s of its zygote's SIGKILL",
          "[reliability][hostile_task]") {
  // Issue 13.8: setuid in the initializer clears the death signal (kernel),
  // and so can a task. The worker arms it again after both, and an idle
  // worker also notices by itself that its zygote is gone.
  for (bool by_setuid : {true, false}) {
    coproc::test::run_async([by_setuid](asio::io_context& ctx) -> asio::awaitable<void> {
      coproc::pool_options options{.workers = 1};
      if (by_setuid) {
        options.initializer = drop_to_nobody;
      }
      process_pool pool(ctx.get_executor(), std::move(options));
      co_await pool.submit(clear_death_signal);
      std::vector<pid_t> zygote = coproc::test::children_named(::getpid(), "coproc-zygote");
      REQUIRE(zygote.size() == 1);
      std::vector<pid_t> workers = children_of(zygote[0]);
      REQUIRE(workers.size() == 1);
      ::kill(zygote[0], SIGKILL);
      INFO((by_setuid ? "initializer setuid(65534)" : "task prctl(PR_SET_PDEATHSIG, 0)"));
      CHECK(ends_within(workers[0], std::chrono::seconds(1)));
      ::kill(workers[0], SIGKILL);
    });
  }
}

namespace {

std::atomic<std::uint32_t>* spinning = nullptr;

int clear_death_signal_and_spin() {
  ::prctl(PR_SET_PDEATHSIG, 0);
  spinning->fetch_add(1);
  for (;;) {
    asm volatile("" ::: "memory");
  }
}

/// Polls (through the loop, which must keep running) until `pid` ends or
/// `limit` passed.
asio::awaitable<bool> ends_within_async(pid_t pid, std::chrono::milliseconds limit) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!coproc::test::gone_or_zombie(pid)) {
    if (std::chrono::steady_clock::now() > deadline) {
      co_return false;
    }
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(asio::use_awaitable);
  }
  co_return true;
}

}  // namespace

TEST_CASE(
    "a busy worker whose task cleared its death signal ends within 1 s of its zygote's SIGKILL",
    "[reliability][hostile_task]") {
  // The host hears of the zygote's death (its report pipe ends) and kills the
  // workers that still run its tasks through their pidfds.
  coproc::mapped_region shared = coproc::mapped_region::create(4096);
  spinning = new (shared.data()) std::atomic<std::uint32_t>(0);
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    int outcome = 0;  // 1: failed, 2: a value
    pool.async_submit(clear_death_signal_and_spin,
                      [&outcome](std::exception_ptr e, int) { outcome = e ? 1 : 2; });
    asio::steady_timer t(ctx);
    while (spinning->load() == 0) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    std::vector<pid_t> zygote = coproc::test::children_named(::getpid(), "coproc-zygote");
    REQUIRE(zygote.size() == 1);
    std::vector<pid_t> workers = children_of(zygote[0]);
    REQUIRE(workers.size() == 1);
    ::kill(zygote[0], SIGKILL);
    CHECK(co_await ends_within_async(workers[0], std::chrono::seconds(1)));
    ::kill(workers[0], SIGKILL);
    while (outcome == 0) {  // the task's completion, posted when the pool saw the zygote's end
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    CHECK(outcome == 1);
  });
}
