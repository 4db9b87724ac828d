// Crash isolation on the worker ranks, run as `mpirun -np 3
// mpi_isolation_check [case]`: every task runs in a worker process of its
// rank's own pool, so a crash, a timeout or a cancellation costs that worker
// (killed, replaced), never the rank or the job.
//
// Cases: "all" (default), or "crash" alone (what the two-host test runs).

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "check_support.hpp"
#include "coproc/mpi/mpi_pool.hpp"
#include "coproc/runtime/worker_crashed_error.hpp"

namespace {

using namespace check;

std::atomic<std::uint64_t> spins{0};

// The ways a task takes its worker down.
enum class death { segv, abort, exit3, sigkill, cpu_limit };

int die(death how) {
  switch (how) {
    case death::segv:
      ::raise(SIGSEGV);
      break;
    case death::abort:
      std::abort();
    case death::exit3:
      ::_exit(3);
    case death::sigkill:  // what the OOM killer sends
      ::raise(SIGKILL);
      break;
    case death::cpu_limit:  // RLIMIT_CPU (pool_options::limits): SIGXCPU
      for (;;) {
        spins.fetch_add(1, std::memory_order_relaxed);
      }
  }
  return 0;
}

// Crashes on every 100th item: 1% of a map.
int crash_every_100th(int i) {
  if (i % 100 == 0) {
    ::raise(SIGSEGV);
  }
  return i + 1;
}

// Writes its worker's pid to `path`.pid, then waits for `path` to exist.
int report_pid_then_wait(std::string path) {
  { std::ofstream(path + ".pid") << ::getpid(); }
  return wait_for_file(path);
}

int read_pid(const std::string& path) {
  int pid = 0;
  std::ifstream(path + ".pid") >> pid;
  return pid;
}

bool gone(int pid) {
  return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
}

std::uint64_t crashes_reported(coproc::mpi_pool& pool) {
  std::uint64_t n = 0;
  for (const auto& r : pool.stats().ranks) {
    n += r.worker_crashes;
  }
  return n;
}

void print_ranks(coproc::mpi_pool& pool) {
  for (const auto& r : pool.stats().ranks) {
    std::fprintf(stderr,
                 "  rank %d (pid %d): %zu workers alive, %zu busy, %llu crashes, %llu respawns\n",
                 r.rank, static_cast<int>(r.pid), r.workers_alive, r.workers_busy,
                 static_cast<unsigned long long>(r.worker_crashes),
                 static_cast<unsigned long long>(r.respawns));
  }
}

struct crash_case {
  death how;
  int signal;     // expected terminating signal, or 0
  int exit_code;  // expected exit status when signal == 0
  const char* name;
};

asio::awaitable<void> crashes(coproc::mpi_pool& pool) {
  const crash_case cases[] = {
      {death::segv, SIGSEGV, 0, "SIGSEGV"},
      {death::abort, SIGABRT, 0, "abort"},
      {death::exit3, 0, 3, "_exit(3)"},
      {death::sigkill, SIGKILL, 0, "SIGKILL"},
      {death::cpu_limit, SIGXCPU, 0, "RLIMIT_CPU"},
  };
  std::set<int> ranks;
  for (const crash_case& c : cases) {
    std::uint64_t before = crashes_reported(pool);
    bool reported = false;
    try {
      co_await pool.submit(die, c.how);
    } catch (const coproc::worker_crashed_error& e) {
      const coproc::exit_status& s = e.status();
      bool how =
          c.signal != 0 ? (!s.exited && s.signal == c.signal) : (s.exited && s.code == c.exit_code);
      std::string what = e.what();
      // "mpi_pool: rank N: worker PID killed by signal ...: worker process crashed", once.
      bool text =
          what.find("rank ") != std::string::npos && what.find("crashed") == what.rfind("crashed");
      reported = how && e.rank() >= 1 && text;
      ranks.insert(e.rank());
      if (!reported) {
        std::fprintf(stderr, "%s: %s (rank %d)\n", c.name, e.what(), e.rank());
      }
    }
    EXPECT(reported);
    int after = co_await pool.submit(square, 5);  // the job and the ranks go on
    EXPECT(after == 25);
    // The rank's figures follow (sent to rank 0 within 50 ms).
    co_await until([&] { return crashes_reported(pool) == before + 1; });
    if (crashes_reported(pool) != before + 1) {
      std::fprintf(stderr, "%s: not counted as a crash\n", c.name);
      print_ranks(pool);
    }
  }
  co_await until([&] { return crashes_reported(pool) >= 5; });
  EXPECT(crashes_reported(pool) == 5);
  print_ranks(pool);
  std::printf("crash: ok (5 kinds of worker death, ranks seen:");
  for (int r : ranks) {
    std::printf(" %d", r);
  }
  std::printf(")\n");
}

// Needs task_timeout = 200 ms: the timed-out task's worker is killed.
asio::awaitable<void> timeout_kills(coproc::mpi_pool& pool) {
  std::string gate = new_gate();
  bool timed_out = false;
  try {
    co_await pool.submit(report_pid_then_wait, gate);
  } catch (const std::system_error& e) {
    timed_out = e.code() == coproc::errc::task_timeout;
  }
  EXPECT(timed_out);
  int pid = read_pid(gate);
  co_await until([&] { return gone(pid); });
  EXPECT(gone(pid));
  int after = co_await pool.submit(square, 6);
  EXPECT(after == 36);
  ::unlink((gate + ".pid").c_str());
  std::printf("timeout: ok (worker %d killed on its rank)\n", pid);
}

asio::awaitable<void> cancel_kills(coproc::mpi_pool& pool) {
  auto ex = co_await asio::this_coro::executor;
  std::string gate = new_gate();
  asio::cancellation_signal cancel;
  bool done = false;
  std::error_code code;
  pool.async_submit(report_pid_then_wait, gate,
                    asio::bind_cancellation_slot(
                        cancel.slot(), asio::bind_executor(ex, [&](std::exception_ptr e, int) {
                          done = true;
                          try {
                            if (e) {
                              std::rethrow_exception(e);
                            }
                          } catch (const std::system_error& s) {
                            code = s.code();
                          }
                        })));
  co_await until([&] { return read_pid(gate) > 0; });
  int pid = read_pid(gate);
  cancel.emit(asio::cancellation_type::terminal);
  co_await until([&] { return done && gone(pid); });
  EXPECT(code == asio::error::operation_aborted);
  EXPECT(gone(pid));
  EXPECT(pool.stats().tasks_cancelled == 1);
  ::unlink((gate + ".pid").c_str());
  std::printf("cancel: ok (running worker %d killed on its rank)\n", pid);
}

// Needs max_tasks_per_worker = 2 and one worker per rank.
asio::awaitable<void> recycling(coproc::mpi_pool& pool) {
  std::set<int> pids;
  for (int i = 0; i < 12; ++i) {
    int pid = co_await pool.submit(task_pid, i);
    pids.insert(pid);
  }
  // 12 tasks, 2 per worker: at least 6 workers served them.
  EXPECT(pids.size() >= 6);
  co_await until([&] {
    std::uint64_t respawns = 0;
    for (const auto& r : pool.stats().ranks) {
      respawns += r.respawns;
    }
    return respawns >= 4;
  });
  std::printf("recycling: ok (%zu worker pids for 12 tasks)\n", pids.size());
}

// A 10,000-item map, 1% of the items crashing their worker: every item
// answered, each crash with its rank.
asio::awaitable<void> many_with_crashes(coproc::mpi_pool& pool) {
  constexpr int n = 10'000;
  std::vector<int> items(n);
  for (int i = 0; i < n; ++i) {
    items[static_cast<std::size_t>(i)] = i;
  }
  int values = 0, wrong = 0, crashes_with_rank = 0, other = 0;
  std::set<std::size_t> seen;
  // One item per task: a crash fails that item alone.
  auto stream = pool.map_unordered(crash_every_100th, items, 0, 1);
  while (auto r = co_await stream.next()) {
    int i = static_cast<int>(r->index);
    seen.insert(r->index);
    if (!r->error) {
      ++(r->value == i + 1 && i % 100 != 0 ? values : wrong);
      continue;
    }
    try {
      std::rethrow_exception(r->error);
    } catch (const coproc::worker_crashed_error& c) {
      ++(i % 100 == 0 && c.rank() >= 1 && c.status().signal == SIGSEGV ? crashes_with_rank : other);
    } catch (...) {
      ++other;
    }
  }
  EXPECT(seen.size() == static_cast<std::size_t>(n));
  EXPECT(values == n - n / 100);
  EXPECT(crashes_with_rank == n / 100);
  EXPECT(wrong == 0 && other == 0);
  co_await until([&] { return crashes_reported(pool) >= n / 100; });
  EXPECT(crashes_reported(pool) == n / 100);
  std::printf("10,000-item map, 1%% crashing: %d values, %d crashes with their rank, %zu lost\n",
              values, crashes_with_rank, n - seen.size());
}

}  // namespace

int main(int argc, char** argv) {
  coproc::mpi_pool::run_workers_if_not_root(argc, argv);  // ranks 1.. never return
  std::string mode = argc > 1 ? argv[1] : "all";
  asio::io_context ctx;
  {
    coproc::mpi_pool pool(ctx.get_executor(), {.limits = {.cpu_seconds = 1}},
                          {.workers_per_rank = 1});
    run("crash", [&] { return crashes(pool); });
  }
  if (mode == "all") {
    {
      coproc::mpi_pool pool(ctx.get_executor(), {.task_timeout = std::chrono::milliseconds(200)},
                            {.workers_per_rank = 1});
      run("timeout", [&] { return timeout_kills(pool); });
    }
    {
      coproc::mpi_pool pool(ctx.get_executor(), {}, {.workers_per_rank = 1});
      run("cancel", [&] { return cancel_kills(pool); });
    }
    {
      coproc::mpi_pool pool(ctx.get_executor(), {.max_tasks_per_worker = 2},
                            {.workers_per_rank = 1});
      run("recycling", [&] { return recycling(pool); });
    }
    {
      coproc::mpi_pool pool(ctx.get_executor(), {}, {.workers_per_rank = 2});
      run("many", [&] { return many_with_crashes(pool); });
    }
  }
  std::printf("mpi_isolation_check: %s (%d failures)\n", failures == 0 ? "PASSED" : "FAILED",
              failures);
  return failures == 0 ? 0 : 1;
}
