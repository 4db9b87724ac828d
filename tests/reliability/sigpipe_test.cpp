// Issue 13.1: no write of coproc raises SIGPIPE in the host. A pool whose
// zygote is gone (killed by an operator, by a task, by the OOM killer) must
// fail what it cannot run and be destroyed quietly, with SIGPIPE left at its
// default action and no handler installed.

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <exception>
#include <system_error>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"
#include "isolated_run.hpp"
#include "proc_stat.hpp"
#include "reliability_support.hpp"

namespace {

using coproc::process_pool;

int twice(int x) {
  return 2 * x;
}

/// A task that kills the process that forked its worker: the zygote.
int kill_zygote() {
  ::kill(::getppid(), SIGKILL);
  return 0;
}

/// Blocks until `pid` (a child of this process's pool) has exited.
void wait_gone(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    return;  // already reaped or gone
  }
  pollfd p{fd, POLLIN, 0};
  ::poll(&p, 1, 5000);
  ::close(fd);
}

enum class killer { operator_kill, task_kill };

/// The host: SIGPIPE at its default, a pool whose zygote dies, then one more
/// submit (any outcome but a hang) and the destructor. Exit 0: it survived.
int host_outlives_its_zygote(killer who) {
  ::signal(SIGPIPE, SIG_DFL);
  int verdict = 0;
  coproc::test::run_async(
      [&](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(), {.workers = 1});
        if (co_await pool.submit(twice, 4) != 8) {
          verdict = 2;
        }
        pid_t zygote = coproc::test::children_named(::getpid(), "coproc-zygote").at(0);
        if (who == killer::operator_kill) {
          ::kill(zygote, SIGKILL);
        } else {
          try {
            co_await pool.submit(kill_zygote);
          } catch (const std::exception&) {
            // its worker died with the zygote: failing is the expected end
          }
        }
        wait_gone(zygote);
        try {
          co_await pool.submit(twice, 5);  // healed or refused: either, but no SIGPIPE
        } catch (const std::exception&) {
        }
      },
      std::chrono::seconds(20));
  return verdict;
}

}  // namespace

TEST_CASE("a pool whose zygote was killed by an operator does not raise SIGPIPE in the host",
          "[reliability][sigpipe]") {
  auto out =
      coproc::test::run_isolated([] { return host_outlives_its_zygote(killer::operator_kill); });
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("a pool whose zygote a task killed does not raise SIGPIPE in the host",
          "[reliability][sigpipe]") {
  auto out = coproc::test::run_isolated([] { return host_outlives_its_zygote(killer::task_kill); });
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("destroying a pool whose zygote is gone does not raise SIGPIPE",
          "[reliability][sigpipe]") {
  auto out = coproc::test::run_isolated([] {
    ::signal(SIGPIPE, SIG_DFL);
    asio::io_context ctx;
    {
      process_pool pool(ctx.get_executor(), {.workers = 2});
      // The zygote names itself once it runs: wait for that.
      std::vector<pid_t> pids;
      for (int i = 0; i < 5000 && pids.empty(); ++i) {
        pids = coproc::test::children_named(::getpid(), "coproc-zygote");
        if (pids.empty()) {
          timespec pause{0, 1'000'000};  // polling a process name, not ordering events
          ::nanosleep(&pause, nullptr);
        }
      }
      if (pids.size() != 1) {
        return 3;
      }
      ::kill(pids[0], SIGKILL);
      wait_gone(pids[0]);
    }  // the destructor stops the zygote: a write to its command pipe
    return 0;
  });
  INFO("host " << out.describe());
  CHECK(out.passed());
}
