#include "coproc/executors/process_pool.hpp"

#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch_test_macros.hpp>
#include <csignal>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

#include <asio/experimental/deferred.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "coproc/runtime/detail/futex.hpp"
#include "coproc/runtime/mapped_region.hpp"
#include "coproc/runtime/pipe_reader.hpp"

#include "async_test.hpp"
#include "busy_pool_owner.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "proc_stat.hpp"

namespace {

int add(int a, int b) {
  return a + b;
}
std::string greet(std::string name) {
  return "hello " + name;
}
int fib(int n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}
int throws_range(int) {
  throw std::out_of_range("index 7 past the end");
}
int my_pid() {
  return static_cast<int>(::getpid());
}
void nothing() {}
int crash_with(int sig) {
  ::raise(sig);
  return 0;
}
int exit_with(int code) {
  ::_exit(code);
}
int spin_forever() {
  for (;;) {
    asm volatile("" ::: "memory");
  }
}
std::vector<double> echo_vector(std::vector<double> v) {
  return v;
}

using coproc::process_pool;

}  // namespace

TEST_CASE("submit returns the value", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    {
      auto value = co_await pool.submit(add, 2, 3);
      CHECK(value == 5);
    }
    {
      auto value = co_await pool.submit(greet, "world");
      CHECK(value == "hello world");
    }
    {
      auto value = co_await pool.submit([](int n) { return n * 2; }, 21);
      CHECK(value == 42);
    }
    co_await pool.submit(nothing);
    int pid = co_await pool.submit(my_pid);
    CHECK(pid != ::getpid());
  });
}

TEST_CASE("a task's standard exception arrives as its own type", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    try {
      co_await pool.submit(throws_range, 1);
      FAIL("no exception");
    } catch (const std::out_of_range& e) {
      CHECK(std::string(e.what()) == "index 7 past the end");
    }
    {
      auto value = co_await pool.submit(add, 1, 1);  // the worker survived
      CHECK(value == 2);
    }
  });
}

TEST_CASE("a crashing worker fails only its task and is replaced", "[process_pool]") {
  for (int sig : {SIGKILL, SIGSEGV, SIGABRT}) {
    coproc::test::run_async([sig](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2});
      try {
        co_await pool.submit(crash_with, sig);
        FAIL("no exception");
      } catch (const std::system_error& e) {
        CHECK(e.code() == coproc::errc::worker_crashed);
        CHECK(std::string(e.what()).find("signal " + std::to_string(sig)) != std::string::npos);
      }
      {
        auto value = co_await pool.submit(fib, 20);
        CHECK(value == 6765);
      }
      CHECK(pool.stats().worker_crashes == 1);
      CHECK(pool.stats().respawns == 1);
    });
  }
}

TEST_CASE("a worker that calls _exit fails its task with the status", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    try {
      co_await pool.submit(exit_with, 7);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::worker_crashed);
      CHECK(std::string(e.what()).find("status 7") != std::string::npos);
    }
    {
      auto value = co_await pool.submit(add, 2, 2);
      CHECK(value == 4);
    }
  });
}

TEST_CASE("a task past task_timeout fails and its worker is replaced", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(),
                      {.workers = 1, .task_timeout = std::chrono::milliseconds(100)});
    try {
      co_await pool.submit(spin_forever);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::task_timeout);
    }
    {
      auto value = co_await pool.submit(add, 3, 4);
      CHECK(value == 7);
    }
  });
}

TEST_CASE("losing a race against a timer kills the running task", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    process_pool pool(ctx.get_executor(), {.workers = 1});
    asio::steady_timer t(ctx, std::chrono::milliseconds(50));
    auto r = co_await (pool.submit(spin_forever) || t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);
    {
      auto value = co_await pool.submit(add, 5, 5);
      CHECK(value == 10);
    }
    CHECK(pool.stats().tasks_cancelled == 1);
  });
}

TEST_CASE("submit after shutdown fails with pool_stopped", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    {
      auto value = co_await pool.submit(add, 1, 2);
      CHECK(value == 3);
    }
    co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
    try {
      co_await pool.submit(add, 1, 2);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::pool_stopped);
    }
  });
}

TEST_CASE("map returns results in input order", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    std::vector<int> in(1000);
    for (int i = 0; i < 1000; ++i) {
      in[i] = i % 25;
    }
    std::vector<int> out = co_await pool.map(fib, in);
    REQUIRE(out.size() == in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
      CHECK(out[i] == fib(in[i]));
    }
  });
}

TEST_CASE("a large payload crosses through the arena", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    std::vector<double> v(8 << 20);
    for (std::size_t i = 0; i < v.size(); ++i) {
      v[i] = static_cast<double>(i) * 0.5;
    }
    auto back = co_await pool.submit(echo_vector, v);
    CHECK(back == v);
  });
}

TEST_CASE("use_future works from a plain thread", "[process_pool]") {
  asio::io_context ctx;
  process_pool pool(ctx.get_executor(), {.workers = 1});
  auto guard = asio::make_work_guard(ctx);
  std::thread loop([&] { ctx.run(); });
  std::future<int> f = pool.async_submit(add, 20, 22, asio::use_future);
  CHECK(f.get() == 42);
  guard.reset();
  ctx.stop();
  loop.join();
}

namespace {
int slow_square(int x) {
  // Later items finish first: completion order differs from input order.
  volatile long spin = (10 - x) * 2'000'000L;
  while (spin > 0) {
    spin = spin - 1;
  }
  return x * x;
}
/// Shared words a test and its workers see at the same address: the region
/// is mapped before any pool (and so any zygote) exists.
struct gate_words {
  std::atomic<std::uint32_t> open{0};
  std::atomic<std::uint32_t> arrived{0};
  std::atomic<std::uint32_t> calls{0};
};
gate_words& gate() {
  static coproc::mapped_region region = coproc::mapped_region::create(4096);
  static gate_words* words = new (region.data()) gate_words;
  return *words;
}
void reset_gate() {
  gate().open = 0;
  gate().arrived = 0;
  gate().calls = 0;
}
/// Runs in a worker: announces itself, then blocks until the test opens the gate.
int wait_at_gate() {
  gate().arrived.fetch_add(1);
  coproc::detail::futex_wake(gate().arrived, 1 << 20);
  while (gate().open.load() == 0) {
    coproc::detail::futex_wait(gate().open, 0);
  }
  return 1;
}
int count_call(int x) {
  gate().calls.fetch_add(1);
  return x;
}
void open_gate() {
  gate().open = 1;
  coproc::detail::futex_wake(gate().open, 1 << 20);
}
/// Waits (in the test's loop) until `n` tasks arrived at the gate.
asio::awaitable<void> until_arrived(asio::io_context& ctx, std::uint32_t n) {
  asio::steady_timer t(ctx);
  while (gate().arrived.load() < n) {
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(asio::use_awaitable);
  }
}
std::size_t count_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}
/// Children of this process, and how many of them are zombies.
std::pair<int, int> count_children() {
  int children = 0, zombies = 0;
  std::string me = std::to_string(::getpid());
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) {
      continue;
    }
    auto close = line.rfind(')');
    if (close == std::string::npos) {
      continue;
    }
    std::istringstream rest(line.substr(close + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == me) {
      ++children;
      zombies += state == "Z";
    }
  }
  return {children, zombies};
}
}  // namespace

TEST_CASE("map_unordered yields every item once, as completed", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    std::vector<int> in{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    auto stream = pool.map_unordered(slow_square, in, 3);
    std::vector<int> seen(in.size(), 0);
    std::vector<std::size_t> order;
    while (auto r = co_await stream.next()) {
      CHECK(r->get() == in[r->index] * in[r->index]);
      ++seen[r->index];
      order.push_back(r->index);
    }
    CHECK(seen == std::vector<int>(in.size(), 1));
    CHECK(stream.remaining() == 0);
  });
}

TEST_CASE("cancelling a queued task drops it without running it", "[process_pool]") {
  reset_gate();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    // The only worker blocks at the gate; the second task waits behind it.
    int first = 0;
    pool.async_submit(wait_at_gate, [&](std::exception_ptr, int v) { first = v; });
    co_await until_arrived(ctx, 1);
    asio::cancellation_signal cancel_second;
    std::exception_ptr second_error;
    bool second_done = false;
    pool.async_submit(
        count_call, 1,
        asio::bind_cancellation_slot(cancel_second.slot(), [&](std::exception_ptr e, int) {
          second_error = e;
          second_done = true;
        }));
    co_await asio::post(ctx, asio::use_awaitable);  // the pool has accepted it
    cancel_second.emit(asio::cancellation_type::terminal);
    asio::steady_timer t(ctx);
    while (!second_done) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    REQUIRE(second_error);
    try {
      std::rethrow_exception(second_error);
    } catch (const std::system_error& e) {
      CHECK(e.code() == asio::error::operation_aborted);
    }
    open_gate();
    int five = co_await pool.submit(count_call, 5);  // runs after the blocked task
    CHECK(five == 5);
    CHECK(first == 1);
    CHECK(gate().calls.load() == 1);  // the cancelled task never ran
    CHECK(pool.stats().tasks_cancelled == 1);
    CHECK(pool.stats().worker_crashes == 0);
  });
}

TEST_CASE("a crash fails only its own task among many", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    int ok = 0, crashed = 0, pending = 0;
    asio::steady_timer done(ctx, asio::steady_timer::time_point::max());
    for (int i = 0; i < 200; ++i) {
      ++pending;
      auto handler = [&](std::exception_ptr e, int v) {
        if (!e) {
          ok += v == fib(15);
        } else {
          try {
            std::rethrow_exception(e);
          } catch (const std::system_error& se) {
            crashed += se.code() == coproc::errc::worker_crashed;
          }
        }
        if (--pending == 0) {
          done.cancel();
        }
      };
      if (i == 100) {
        pool.async_submit(crash_with, SIGSEGV, handler);
      } else {
        pool.async_submit(fib, 15, handler);
      }
    }
    std::error_code ec;
    co_await done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ok == 199);
    CHECK(crashed == 1);
  });
}

TEST_CASE("a full queue holds submits back and admits them in order", "[process_pool]") {
  reset_gate();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .queue_capacity = 2});
    std::vector<int> order;
    pool.async_submit(wait_at_gate, [&](std::exception_ptr, int) { order.push_back(-1); });
    co_await until_arrived(ctx, 1);
    for (int i = 0; i < 40; ++i) {
      pool.async_submit(count_call, i, [&](std::exception_ptr, int v) { order.push_back(v); });
    }
    asio::steady_timer t(ctx);
    // 1 running + 2 accepted is the limit: the other 38 submits wait.
    while (pool.stats().tasks_waiting < 38) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    co_await t.async_wait(asio::use_awaitable);
    CHECK(pool.stats().tasks_waiting == 38);
    open_gate();
    while (order.size() < 41) {
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
    std::vector<int> expected{-1};
    for (int i = 0; i < 40; ++i) {
      expected.push_back(i);
    }
    CHECK(order == expected);
    CHECK(pool.stats().tasks_waiting == 0);
  });
}

TEST_CASE("workers are recycled after max_tasks_per_worker", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .max_tasks_per_worker = 3});
    std::set<int> pids;
    for (int i = 0; i < 9; ++i) {
      pids.insert(co_await pool.submit(my_pid));
    }
    CHECK(pids.size() == 3);
    CHECK(pool.stats().worker_crashes == 0);
  });
}

TEST_CASE("a pool at rest still hears of a worker that retired after its last task",
          "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .max_tasks_per_worker = 2});
    int first = co_await pool.submit(my_pid);
    // The zygote reaps and reports; stopped, it holds those reports back
    // until long after the pool has had time to go to rest (20 ms idle).
    pid_t zygote = coproc::test::read_stat(first).ppid;
    REQUIRE(zygote > 1);
    REQUIRE(::kill(zygote, SIGSTOP) == 0);
    int second = co_await pool.submit(my_pid);  // the worker's last task: it retires
    CHECK(second == first);
    asio::steady_timer t(ctx);
    t.expires_after(std::chrono::milliseconds(200));
    co_await t.async_wait(asio::use_awaitable);
    REQUIRE(::kill(zygote, SIGCONT) == 0);
    // Nothing is submitted from here on: only a pool that kept listening
    // learns of the exit and the replacement.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    auto s = pool.stats();
    while ((s.respawns < 1 || s.workers_alive != 1 || s.worker_pids.size() != 1) &&
           std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(2));
      co_await t.async_wait(asio::use_awaitable);
      s = pool.stats();
    }
    CHECK(s.respawns == 1);
    CHECK(s.workers_alive == 1);
    REQUIRE(s.worker_pids.size() == 1);
    CHECK(s.worker_pids[0] != first);
    CHECK(s.worker_crashes == 0);
  });
}

TEST_CASE("idle_priority runs workers under SCHED_IDLE, with either start method",
          "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    auto policy = [] { return ::sched_getscheduler(0); };
    process_pool plain(ctx.get_executor(), {.workers = 1});
    int p0 = co_await plain.submit(policy);
    CHECK(p0 == SCHED_OTHER);
    process_pool idle(ctx.get_executor(), {.workers = 1, .idle_priority = true});
    int p1 = co_await idle.submit(policy);
    CHECK(p1 == SCHED_IDLE);
    process_pool spawned(
        ctx.get_executor(),
        {.workers = 1, .start_method = coproc::start_method::spawn, .idle_priority = true});
    int p2 = co_await spawned.submit(policy);
    CHECK(p2 == SCHED_IDLE);
    CHECK(::sched_getscheduler(0) == SCHED_OTHER);  // the parent keeps its own
  });
}

TEST_CASE("the initializer runs once in each worker", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    static int initialized = 0;
    process_pool pool(ctx.get_executor(), {.workers = 1, .initializer = [] { initialized = 42; }});
    int seen = co_await pool.submit([] { return initialized; });
    CHECK(seen == 42);
    CHECK(initialized == 0);  // it ran in the worker, not here
  });
}

TEST_CASE("destroying the pool leaves no process, zombie or fd behind", "[process_pool]") {
  std::size_t fds = count_fds();
  auto [children, zombies] = count_children();
  for (int round = 0; round < 5; ++round) {
    coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2});
      {
        auto value = co_await pool.submit(add, 1, 2);
        CHECK(value == 3);
      }
    });
  }
  CHECK(count_fds() == fds);
  CHECK(count_children() == std::pair{children, zombies});
}

TEST_CASE("a parent killed by SIGKILL leaves no descendant behind", "[process_pool]") {
  // A separate process owns a pool, reports its worker pids, and is killed.
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto rd_wr_ends = coproc::make_pipe();
  [[maybe_unused]] auto& rd = std::get<0>(rd_wr_ends);
  [[maybe_unused]] auto& wr = std::get<1>(rd_wr_ends);
  pid_t parent = ::fork();
  if (parent == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a test run that was killed
    rd.reset();
    asio::io_context ctx;
    process_pool pool(ctx.get_executor(), {.workers = 2});
    // Both workers busy, then report their pids (spawn reports arrive
    // asynchronously: poll until both are known).
    coproc::test::report_busy_workers(ctx, pool, spin_forever, wr.get());
  }
  wr.reset();
  std::vector<pid_t> pids(8, -1);
  pollfd ready{rd.get(), POLLIN, 0};
  if (::poll(&ready, 1, 20'000) != 1) {
    ::kill(parent, SIGKILL);
    ::waitpid(parent, nullptr, 0);
    FAIL("the pool's owner did not report its workers within 20 s");
  }
  ssize_t n = ::read(rd.get(), pids.data(), pids.size() * sizeof(pid_t));
  ::kill(parent, SIGKILL);  // on every path: the owner never outlives the test
  ::waitpid(parent, nullptr, 0);
  REQUIRE(n >= static_cast<ssize_t>(3 * sizeof(pid_t)));
  pids.resize(static_cast<std::size_t>(n) / sizeof(pid_t) - 1);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  bool all_gone = false;
  while (!all_gone && std::chrono::steady_clock::now() < deadline) {
    all_gone = true;
    for (pid_t p : pids) {
      // Gone, or a zombie left to init (it runs nothing and holds no memory).
      all_gone = all_gone && coproc::test::gone_or_zombie(p);
    }
    if (!all_gone) {
      std::this_thread::yield();
    }
  }
  CHECK(all_gone);
}

namespace {
std::size_t allocate_mib(std::size_t mib) {
  std::vector<char> v(mib << 20, 1);
  return v.size();
}
// Keeps `mib` MiB resident in this worker until it exits. The block stays in
// a static and every page is written through a volatile pointer, so neither
// the optimizer nor the allocator gives it back before the pool checks the
// worker's RSS: a sanitizer's allocator ignores the worker's mallopt settings
// and unmapped a freed 96 MiB at once (the worker was never over the limit).
std::size_t hold_mib(std::size_t mib) {
  static std::unique_ptr<char[]> held;
  std::size_t n = mib << 20;
  held = std::make_unique_for_overwrite<char[]>(n);
  volatile char* p = held.get();
  for (std::size_t i = 0; i < n; i += 4096) {
    p[i] = 1;
  }
  return n;
}
long open_files_limit() {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  return static_cast<long>(r.rlim_cur);
}
}  // namespace

TEST_CASE("worker limits apply inside workers only", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(
        ctx.get_executor(),
        {.workers = 1, .limits = {.address_space = std::size_t{2} << 30, .open_files = 64}});
    long files = co_await pool.submit(open_files_limit);
    CHECK(files == 64);
    CHECK(open_files_limit() != 64);
    try {
      co_await pool.submit(allocate_mib, std::size_t{4096});
      FAIL("a 4 GiB allocation passed a 2 GiB address-space limit");
    } catch (const std::bad_alloc&) {  // a standard type arrives as itself
    }
    std::size_t small = co_await pool.submit(allocate_mib, std::size_t{16});
    CHECK(small == std::size_t{16} << 20);
  });
}

TEST_CASE("submit_for fails a task past its deadline with task_timeout", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    try {
      co_await pool.submit_for(std::chrono::milliseconds(50), spin_forever);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == coproc::errc::task_timeout);
    }
    int v = co_await pool.submit_for(std::chrono::seconds(10), add, 2, 40);
    CHECK(v == 42);
    co_await pool.submit_for(std::chrono::seconds(10), nothing);
  });
}

TEST_CASE("a worker whose RSS passed max_worker_rss is recycled", "[process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .max_worker_rss = std::size_t{48} << 20});
    int small_a = co_await pool.submit(my_pid);
    int small_b = co_await pool.submit(my_pid);
    CHECK(small_a == small_b);  // a small worker stays
    std::size_t big = co_await pool.submit(hold_mib, std::size_t{96});
    CHECK(big == std::size_t{96} << 20);
    int after = co_await pool.submit(my_pid);
    CHECK(after != small_b);  // the grown worker retired after its task
    CHECK(pool.stats().worker_crashes == 0);
  });
}
