// mpi_pool end to end, run as `mpirun -np 3 mpi_pool_check [case]` (a plain
// program, not Catch2: every rank runs main(), and only rank 0 gets past
// run_workers_if_not_root). Exit status 0 when every check passed.
//
// Cases: "all" (default) or "rank-death" (rank 1 is SIGKILLed: the job
// must end, never hang; see the ctest entry).

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <typeinfo>
#include <utility>
#include <vector>

#include "check_support.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/mpi/detail/mpi_testing.hpp"
#include "coproc/mpi/mpi_pool.hpp"

namespace {

using namespace check;

void nothing() {}
int throws_runtime(int) {
  throw std::runtime_error("boom");
}
int throws_system(int) {
  throw std::system_error(std::make_error_code(std::errc::invalid_argument));
}

std::uint64_t sum_bytes(const std::vector<std::uint8_t>& v) {
  return std::accumulate(v.begin(), v.end(), std::uint64_t{0});
}
std::vector<std::uint8_t> reversed(std::vector<std::uint8_t> v) {
  std::reverse(v.begin(), v.end());
  return v;
}

// g++ 12 cannot keep an initializer_list in a coroutine frame: build the
// inputs in plain functions.
std::vector<int> countdown() {
  return {5, 4, 3, 2, 1};
}
std::vector<int> countdown_squared() {
  return {25, 16, 9, 4, 1};
}
std::vector<int> first(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// pool_options::initializer: counts its runs in this rank.
int initializer_runs = 0;
void count_initializer() {
  ++initializer_runs;
}
// Workers that take a while to start: until they are up, a rank's stats
// report fewer live workers than it has.
void slow_initializer() {
  ::usleep(300 * 1000);
}
void failing_initializer() {
  throw std::runtime_error("no init here");
}
std::pair<int, int> initializer_runs_and_pid(int) {
  return {initializer_runs, static_cast<int>(::getpid())};
}
std::vector<std::uint8_t> make_bytes(int n) {
  return std::vector<std::uint8_t>(static_cast<std::size_t>(n), 1);
}

std::size_t own_cpus() {
  cpu_set_t set;
  return ::sched_getaffinity(0, sizeof set, &set) == 0 ? static_cast<std::size_t>(CPU_COUNT(&set))
                                                       : 1;
}

asio::awaitable<void> values(coproc::mpi_pool& pool) {
  int a = co_await pool.submit(square, 7);
  EXPECT(a == 49);
  int b = co_await pool.submit([](int x, int y) { return x - y; }, 10, 3);
  EXPECT(b == 7);
  std::string s = co_await pool.submit([](std::string x) { return x + "!"; }, "hi");
  EXPECT(s == "hi!");
  co_await pool.submit(nothing);
  // Tasks reach more than one rank (the pids differ from rank 0's).
  std::set<int> pids;
  for (int i = 0; i < 8; ++i) {
    int p = co_await pool.submit(task_pid, i);
    pids.insert(p);
  }
  EXPECT(pids.count(static_cast<int>(::getpid())) == 0);
  std::printf("values: ok (%zu worker pids seen)\n", pids.size());
}

asio::awaitable<void> exceptions(coproc::mpi_pool& pool) {
  bool remote = false;
  try {
    co_await pool.submit(throws_runtime, 1);
  } catch (const std::runtime_error& e) {  // a standard type arrives as itself
    remote = typeid(e) == typeid(std::runtime_error) && std::string(e.what()) == "boom";
  }
  EXPECT(remote);
  bool system = false;
  try {
    co_await pool.submit(throws_system, 1);
  } catch (const std::system_error& e) {
    system = e.code() == std::errc::invalid_argument;
  }
  EXPECT(system);
  // A function outside the main executable has no stable offset: refused.
  bool refused = false;
  try {
    co_await pool.submit(static_cast<double (*)(double)>(&::cos), 1.0);
  } catch (const std::system_error& e) {
    refused = e.code() == coproc::errc::function_mismatch;
  }
  EXPECT(refused);
  int after = co_await pool.submit(square, 3);
  EXPECT(after == 9);
  std::printf("exceptions: ok\n");
}

asio::awaitable<void> maps(coproc::mpi_pool& pool) {
  std::vector<int> in(1000);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> out = co_await pool.map(square, in);
  bool ordered = out.size() == in.size();
  for (std::size_t i = 0; ordered && i < in.size(); ++i) {
    ordered = out[i] == in[i] * in[i];
  }
  EXPECT(ordered);
  std::vector<int> one = co_await pool.map(square, countdown(), 1);
  EXPECT(one == countdown_squared());
  bool map_threw = false;
  try {
    co_await pool.map(throws_runtime, first(3));
  } catch (const std::runtime_error& e) {  // its own type, the items named
    map_threw = std::string(e.what()).starts_with("coproc::map: items [");
  }
  EXPECT(map_threw);

  auto stream = pool.map_unordered(square, first(10), 3);
  std::set<std::size_t> seen;
  bool values_ok = true;
  while (auto r = co_await stream.next()) {
    seen.insert(r->index);
    values_ok = values_ok && r->get() == static_cast<int>(r->index * r->index);
  }
  EXPECT(seen.size() == 10);
  EXPECT(values_ok);
  std::printf("maps: ok\n");
}

asio::awaitable<void> large(coproc::mpi_pool& pool) {
  std::vector<std::uint8_t> big(std::size_t{8} << 20);
  for (std::size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<std::uint8_t>(i * 7);
  }
  std::uint64_t expect_sum = sum_bytes(big);
  std::uint64_t got = co_await pool.submit(sum_bytes, big);
  EXPECT(got == expect_sum);
  std::vector<std::uint8_t> back = co_await pool.submit(reversed, big);
  std::reverse(back.begin(), back.end());
  EXPECT(back == big);
  std::printf("large: ok (8 MiB each way)\n");
}

// Needs a pool with tasks_per_rank = 1 and 2 worker ranks.
asio::awaitable<void> cancellation(coproc::mpi_pool& pool) {
  auto ex = co_await asio::this_coro::executor;
  std::string gate = "/tmp/coproc_mpi_gate_" + std::to_string(::getpid());
  ::unlink(gate.c_str());
  struct outcome {
    bool done = false;
    std::error_code code;
    int value = 0;
  };
  auto record = [ex](outcome& o) {
    return asio::bind_executor(ex, [&o](std::exception_ptr e, int v) {
      o.done = true;
      o.value = v;
      try {
        if (e) {
          std::rethrow_exception(e);
        }
      } catch (const std::system_error& s) {
        o.code = s.code();
      } catch (...) {
        o.code = std::make_error_code(std::errc::io_error);
      }
    });
  };
  outcome a, b, c;
  asio::cancellation_signal cancel_a, cancel_c;
  // a and b occupy both ranks (one task each); c stays queued.
  pool.async_submit(wait_for_file, gate, asio::bind_cancellation_slot(cancel_a.slot(), record(a)));
  pool.async_submit(wait_for_file, gate, record(b));
  pool.async_submit(square, 3, asio::bind_cancellation_slot(cancel_c.slot(), record(c)));
  asio::steady_timer t(ex);
  while (pool.stats().workers_busy < 2) {  // a and b sent (one per rank): c stays queued
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(asio::use_awaitable);
  }
  EXPECT(pool.stats().tasks_queued == 1);
  cancel_c.emit(asio::cancellation_type::terminal);  // queued: dropped
  cancel_a.emit(asio::cancellation_type::terminal);  // running: result discarded
  while (!(a.done && c.done)) {                      // completions are posted: let them run
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(asio::use_awaitable);
  }
  EXPECT(c.code == asio::error::operation_aborted);
  EXPECT(a.code == asio::error::operation_aborted);
  EXPECT(!b.done);
  coproc::pool_stats s = pool.stats();
  EXPECT(s.tasks_cancelled == 2);
  EXPECT(s.tasks_queued == 0);
  std::FILE* f = std::fopen(gate.c_str(), "w");  // open the gate
  if (f != nullptr) {
    std::fclose(f);
  }
  int d = co_await pool.submit(square, 4);  // needs a rank: a's or b's
  EXPECT(d == 16);
  while (!b.done) {
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(asio::use_awaitable);
  }
  EXPECT(!b.code && b.value == 1);
  ::unlink(gate.c_str());
  std::printf("cancellation: ok\n");
}

asio::awaitable<void> shutdown(coproc::mpi_pool& pool) {
  int v = 0;
  auto ex = co_await asio::this_coro::executor;
  pool.async_submit(square, 6, asio::bind_executor(ex, [&v](std::exception_ptr, int r) { v = r; }));
  co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
  EXPECT(v == 36);
  bool stopped = false;
  try {
    co_await pool.submit(square, 1);
  } catch (const std::system_error& e) {
    stopped = e.code() == coproc::errc::pool_stopped;
  }
  EXPECT(stopped);
  std::printf("shutdown: ok\n");
}

// Needs queue_capacity = 2, tasks_per_rank = 1 and 2 worker ranks.
asio::awaitable<void> back_pressure(coproc::mpi_pool& pool) {
  auto ex = co_await asio::this_coro::executor;
  std::string gate = new_gate();
  int gated = 0;
  auto count =
      asio::bind_executor(ex, [&gated](std::exception_ptr e, int) { gated += e ? 100 : 1; });
  pool.async_submit(wait_for_file, gate, count);
  pool.async_submit(wait_for_file, gate, count);
  // Both gated tasks sent, one per rank (a rank may still owe the reply of
  // a task of the previous pool, and count it: wait for the state itself).
  co_await until([&] {
    auto s = pool.stats();
    return s.workers_busy == 2 && s.tasks_queued == 0;
  });
  std::vector<int> got(5, -1);
  std::vector<std::error_code> codes(5);
  asio::cancellation_signal cancel_last;
  for (int i = 0; i < 5; ++i) {
    auto h = asio::bind_executor(ex, [&got, &codes, i](std::exception_ptr e, int v) {
      got[static_cast<std::size_t>(i)] = v;
      try {
        if (e) {
          std::rethrow_exception(e);
        }
      } catch (const std::system_error& s) {
        codes[static_cast<std::size_t>(i)] = s.code();
      }
    });
    if (i == 4) {
      pool.async_submit(square, i, asio::bind_cancellation_slot(cancel_last.slot(), h));
    } else {
      pool.async_submit(square, i, h);
    }
  }
  // Both ranks hold a gated task: 2 tasks fill the queue, 3 wait for room.
  coproc::pool_stats s = pool.stats();
  EXPECT(s.tasks_queued == 2);
  EXPECT(s.tasks_waiting == 3);
  cancel_last.emit(asio::cancellation_type::terminal);  // a waiting task is dropped
  EXPECT(pool.stats().tasks_waiting == 2);
  open_gate(gate);
  // Completions arrive from two ranks in any order: wait for all of them.
  co_await until(
      [&] { return gated == 2 && std::count(got.begin(), got.begin() + 4, -1) == 0 && codes[4]; });
  EXPECT(gated == 2);
  EXPECT(got[0] == 0 && got[1] == 1 && got[2] == 4 && got[3] == 9);
  EXPECT(codes[4] == asio::error::operation_aborted);
  s = pool.stats();
  EXPECT(s.tasks_waiting == 0 && s.tasks_queued == 0);
  ::unlink(gate.c_str());
  std::printf("back-pressure: ok\n");
}

// Needs task_timeout = 200 ms and tasks_per_rank = 1.
asio::awaitable<void> timeouts(coproc::mpi_pool& pool) {
  std::string gate = new_gate();
  auto t0 = std::chrono::steady_clock::now();
  bool timed_out = false;
  try {
    co_await pool.submit(wait_for_file, gate);
  } catch (const std::system_error& e) {
    timed_out = e.code() == coproc::errc::task_timeout;
  }
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT(timed_out);
  EXPECT(waited >= std::chrono::milliseconds(200));
  EXPECT(waited < std::chrono::seconds(5));
  int quick = co_await pool.submit(square, 5);  // the other rank, well within the limit
  EXPECT(quick == 25);
  open_gate(gate);  // the timed-out task's rank finishes; its result is discarded
  std::vector<int> all = co_await pool.map(square, first(20), 1);
  EXPECT(all.size() == 20 && all[19] == 361);
  EXPECT(pool.stats().tasks_failed == 1);
  ::unlink(gate.c_str());
  std::printf("task_timeout: ok (%lld ms)\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()));
}

asio::awaitable<void> per_call_deadline(coproc::mpi_pool& pool) {
  std::string gate = new_gate();
  bool timed_out = false;
  try {
    co_await pool.submit_for(std::chrono::milliseconds(50), wait_for_file, gate);
  } catch (const std::system_error& e) {
    timed_out = e.code() == coproc::errc::task_timeout;
  }
  EXPECT(timed_out);
  open_gate(gate);
  int v = co_await pool.submit_for(std::chrono::seconds(30), square, 6);
  EXPECT(v == 36);
  co_await pool.submit_for(std::chrono::seconds(30), nothing);
  ::unlink(gate.c_str());
  std::printf("submit_for: ok\n");
}

asio::awaitable<void> initialized(coproc::mpi_pool& pool) {
  auto runs = co_await pool.map(initializer_runs_and_pid, first(16), 1);
  std::set<int> pids;
  bool once = true;
  for (auto [n, pid] : runs) {
    once = once && n == 1;
    pids.insert(pid);
  }
  EXPECT(once);
  EXPECT(pids.count(static_cast<int>(::getpid())) == 0);
  std::printf("initializer: ok (ran once on each of %zu ranks seen)\n", pids.size());
}

asio::awaitable<void> payload_limit(coproc::mpi_pool& pool) {
  bool args_refused = false;
  try {
    co_await pool.submit(sum_bytes, std::vector<std::uint8_t>(4096, 1));
  } catch (const std::system_error& e) {
    args_refused = e.code() == coproc::errc::payload_too_large;
  }
  EXPECT(args_refused);
  bool result_refused = false;
  try {
    co_await pool.submit(make_bytes, 4096);
  } catch (const std::system_error& e) {
    result_refused = e.code() == coproc::errc::payload_too_large;
    if (!result_refused) {
      std::fprintf(stderr, "max_payload: %s\n", e.what());
    }
  }
  EXPECT(result_refused);
  auto small = co_await pool.submit(make_bytes, 100);
  EXPECT(small.size() == 100);
  std::printf("max_payload: ok\n");
}

// Its first attempt leaves `marker` and dies as the OOM killer ends a
// process; a retry (in the same rank's pool) finds the marker and returns.
int crash_once(std::string marker) {
  if (::access(marker.c_str(), F_OK) != 0) {
    open_gate(marker);
    ::kill(::getpid(), SIGKILL);
  }
  return 2;
}

// Needs pool_options::retries = 1: it reaches every rank's own pool, and a
// retry_policy travels with its task.
asio::awaitable<void> retries(coproc::mpi_pool& pool) {
  std::string a = new_gate();
  int v = co_await pool.submit(crash_once, a);
  EXPECT(v == 2);
  std::string b = new_gate();
  std::error_code once;  // no retry for this call
  try {
    co_await pool.submit(coproc::retry_policy{}, crash_once, b);
  } catch (const std::system_error& e) {
    once = e.code();
  }
  EXPECT(once == coproc::errc::worker_crashed);
  std::string c = new_gate();
  int w = co_await pool.submit(coproc::retry_policy{.retries = 2}, crash_once, c);
  EXPECT(w == 2);
  co_await until([&] { return pool.stats().tasks_retried == 2; });  // the ranks report it
  EXPECT(pool.stats().tasks_retried == 2);
  for (const std::string& m : {a, b, c}) {
    ::unlink(m.c_str());
  }
  std::printf("retries: ok\n");
}

}  // namespace

int main(int argc, char** argv) {
  coproc::mpi_pool::run_workers_if_not_root(argc, argv);  // ranks 1.. never return
  std::string mode = argc > 1 ? argv[1] : "all";
  asio::io_context ctx;

  if (mode == "rank-death") {
    // A task cannot end its rank any more (it runs in a worker of the rank):
    // the rank process itself is killed, as a lost host would be.
    coproc::mpi_pool pool(ctx.get_executor(), {}, {.workers_per_rank = 1});
    run("rank-death", [&]() -> asio::awaitable<void> {
      ::kill(pool.stats().ranks.at(0).pid, SIGKILL);
      co_await pool.submit(wait_for_file, new_gate());
      std::printf("rank-death: the task returned?\n");
    });
    std::printf("rank-death: rank 0 survived the death of rank 1\n");
    return 1;  // Open MPI is expected to end the job before this
  }

  // A rank that runs another build refuses the session: a clean error.
  coproc::detail::mpi_set_build_id_for_testing("0123456789abcdef");
  bool mismatch = throws_code([&] { coproc::mpi_pool bad(ctx.get_executor()); },
                              coproc::errc::function_mismatch);
  EXPECT(mismatch);
  coproc::detail::mpi_set_build_id_for_testing("");
  std::printf("build id mismatch: %s\n", mismatch ? "ok" : "FAILED");

  {
    // By default each worker rank forks one worker per CPU of its own.
    coproc::mpi_pool pool(ctx.get_executor());
    EXPECT(pool.size() == 2 * own_cpus());
    run("values", [&] { return values(pool); });
    run("exceptions", [&] { return exceptions(pool); });
    run("maps", [&] { return maps(pool); });
    run("large", [&] { return large(pool); });
    coproc::pool_stats s = pool.stats();
    EXPECT(s.workers_alive == pool.size());
    EXPECT(s.ranks.size() == 2);
    EXPECT(s.tasks_completed > 0 && s.tasks_failed >= 3);
  }
  {
    coproc::mpi_pool pool(ctx.get_executor(), {}, {.workers_per_rank = 1, .tasks_per_rank = 1});
    run("cancellation", [&] { return cancellation(pool); });
  }
  // process_pool's options, as a program written for it passes them.
  {
    coproc::mpi_pool pool(ctx.get_executor(), {.queue_capacity = 2},
                          {.workers_per_rank = 1, .tasks_per_rank = 1});
    run("back-pressure", [&] { return back_pressure(pool); });
  }
  {
    coproc::mpi_pool pool(ctx.get_executor(),
                          {.workers = 7, .task_timeout = std::chrono::milliseconds(200)},
                          {.workers_per_rank = 1, .tasks_per_rank = 1});
    EXPECT(pool.size() == 2);  // mpi_options decides, not .workers
    run("task_timeout", [&] { return timeouts(pool); });
  }
  {
    coproc::mpi_pool pool(ctx.get_executor());
    run("submit_for", [&] { return per_call_deadline(pool); });
  }
  {
    coproc::mpi_pool pool(ctx.get_executor(), {.retries = 1}, {.workers_per_rank = 1});
    run("retries", [&] { return retries(pool); });
  }
  {
    coproc::mpi_pool pool(ctx.get_executor(), {.initializer = count_initializer});
    run("initializer", [&] { return initialized(pool); });
  }
  {
    // size() is the workers the ranks were asked for, even while they start.
    coproc::mpi_pool pool(ctx.get_executor(), {.initializer = slow_initializer},
                          {.workers_per_rank = 2});
    EXPECT(pool.size() == 4);
    std::printf("size while starting: %s (%zu)\n", pool.size() == 4 ? "ok" : "FAILED", pool.size());
  }
  // The initializer runs in each rank's workers, never in a rank: one that
  // throws breaks that rank's pool (pool_broken, with its message) and fails
  // the tasks sent there, not the job.
  bool init_failed = false;
  {
    coproc::mpi_pool bad(ctx.get_executor(), {.initializer = failing_initializer},
                         {.workers_per_rank = 1});
    run("failing initializer", [&]() -> asio::awaitable<void> {
      try {
        co_await bad.submit(square, 2);
      } catch (const std::system_error& e) {
        init_failed = e.code() == coproc::errc::pool_broken &&
                      std::string(e.what()).find("no init here") != std::string::npos;
        if (!init_failed) {
          std::fprintf(stderr, "failing initializer: %s\n", e.what());
        }
      }
    });
  }
  EXPECT(init_failed);
  int captured = 1;
  bool closure_refused = throws_code(
      [&] {
        coproc::mpi_pool bad(ctx.get_executor(), {.initializer = [captured] { (void)captured; }});
      },
      coproc::errc::function_mismatch);
  EXPECT(closure_refused);
  std::printf("initializer refusals: %s\n", init_failed && closure_refused ? "ok" : "FAILED");
  {
    coproc::mpi_pool pool(ctx.get_executor(), {.max_payload = 1024});
    run("max_payload", [&] { return payload_limit(pool); });
  }
  {
    coproc::mpi_pool pool(ctx.get_executor());
    run("shutdown", [&] { return shutdown(pool); });
  }
  std::printf("mpi_pool_check: %s (%d failures)\n", failures == 0 ? "PASSED" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
