// Cooperative stop before the kill (issue 18): this_task::stop_requested(),
// get_stop_token(), pool_options::stop_grace and task_stopped_error, with real
// cancellations, deadlines, signals and kills. No case asserts a duration:
// "within the grace" shows only in outcomes (a value, a kept worker).
#include <signal.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "async_test.hpp"
#include "coproc/coproc.hpp"
#include "failure_of.hpp"
#include "poll_until.hpp"

namespace {

using namespace std::chrono_literals;
using coproc::process_pool;

/// Words the test and its workers share at one address: mapped before any
/// pool (and so any zygote) exists.
struct shared_words {
  std::atomic<std::uint32_t> started{0};  // tasks that began to run
};
shared_words& words() {
  static coproc::mapped_region region = coproc::mapped_region::create(4096);
  static shared_words* w = new (region.data()) shared_words;
  return *w;
}
void reset_words() {
  words().started = 0;
}
void announce_start() {
  words().started.fetch_add(1);
}

/// Waits (on the test's loop) until `n` tasks began to run: a cancellation
/// must find its task running, not queued.
asio::awaitable<void> until_started(std::uint32_t n) {
  co_await coproc::test::poll_until([n] { return words().started.load() >= n; }, 1ms, 20'000);
}

// Tasks (they run in workers).
int polls_then_returns(int value) {
  announce_start();
  while (!coproc::this_task::stop_requested()) {
    ::usleep(200);
  }
  return value;
}
int loops_on_token() {
  announce_start();
  auto st = coproc::this_task::get_stop_token();
  bool possible = st.stop_possible();
  for (auto copy = st; !copy.stop_requested();) {
    ::usleep(200);
  }
  return possible ? 7 : -7;
}
int throws_when_stopped() {
  announce_start();
  while (!coproc::this_task::stop_requested()) {
    ::usleep(200);
  }
  throw std::runtime_error("stopped half-way");
}
int ignores_stop() {
  announce_start();
  for (;;) {
    ::pause();  // only a signal ends it: the pool's SIGKILL
  }
}
int crashes_when_stopped() {
  announce_start();
  while (!coproc::this_task::stop_requested()) {
    ::usleep(200);
  }
  ::raise(SIGSEGV);
  return 0;
}
/// Polls from a thread of its own: the request is the process's, not a thread's.
int polls_in_a_thread() {
  announce_start();
  int seen = 0;
  std::thread poller([&seen] {
    while (!coproc::this_task::stop_requested()) {
      ::usleep(200);
    }
    seen = 11;
  });
  poller.join();
  return seen;
}
/// The worker's pid and whether this task sees a stop request.
std::pair<int, bool> pid_and_stop() {
  return {static_cast<int>(::getpid()), coproc::this_task::stop_requested()};
}

/// What a task's handler delivered.
struct completion {
  bool done = false;
  std::exception_ptr error;
};

/// The error the caller of `fn(args...)` got, cancelled (twice: a second
/// cancellation while the task stops changes nothing) once the task runs.
template <class... A>
asio::awaitable<std::exception_ptr> cancel_when_running(process_pool& pool, int (*fn)(A...),
                                                        A... args) {
  auto c = std::make_shared<completion>();
  asio::cancellation_signal cancel;
  std::uint32_t started = words().started.load();
  pool.async_submit(fn, args...,
                    asio::bind_cancellation_slot(cancel.slot(), [c](std::exception_ptr e, int) {
                      c->done = true;
                      c->error = e;
                    }));
  co_await until_started(started + 1);
  cancel.emit(asio::cancellation_type::terminal);
  cancel.emit(asio::cancellation_type::terminal);
  // A plain pointer: GCC 12 mishandles the lifetime of a temporary in a
  // co_await's operand (a shared_ptr captured there was released one time
  // too many, and the completion freed under this frame).
  completion* seen = c.get();
  co_await coproc::test::poll_until([seen] { return seen->done; }, 1ms, 30'000);
  co_return c->error;
}

/// The error a stopped task's caller got, as task_stopped_error; fails the
/// test when it is not one.
coproc::task_stopped_error stopped_error(const std::exception_ptr& e) {
  REQUIRE(e);
  try {
    std::rethrow_exception(e);
  } catch (const coproc::task_stopped_error& stopped) {
    return stopped;
  } catch (const std::exception& other) {
    FAIL("not a task_stopped_error: " << other.what());
  }
  throw std::logic_error("unreachable");
}

/// The pool's single worker's pid, once it runs.
asio::awaitable<int> worker_pid(process_pool& pool) {
  auto [pid, stop] = co_await pool.submit(pid_and_stop);
  CHECK_FALSE(stop);
  co_return pid;
}

}  // namespace

TEST_CASE("a task that polls stop_requested returns its value after a cancellation", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    int before = co_await worker_pid(pool);
    std::exception_ptr error = co_await cancel_when_running(pool, polls_then_returns, 42);
    auto e = stopped_error(error);
    CHECK(e.code() == asio::error::operation_aborted);
    CHECK(e.finished());
    REQUIRE(e.value<int>() != nullptr);
    CHECK(*e.value<int>() == 42);
    CHECK(e.value<long>() == nullptr);
    CHECK_FALSE(e.task_exception());
    // The worker survived the stop: same process, nothing respawned.
    int after = co_await worker_pid(pool);
    CHECK(after == before);
    auto s = pool.stats();
    CHECK(s.respawns == 0);
    CHECK(s.worker_crashes == 0);
    CHECK(s.tasks_cancelled == 1);
  });
}

TEST_CASE("a task raced with || against an event stops and keeps its worker", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    int before = co_await worker_pid(pool);
    // The other side wins once the task runs: the task is cancelled running.
    auto r = co_await (pool.submit(polls_then_returns, 5) || until_started(1));
    CHECK(r.index() == 1);
    int after = co_await worker_pid(pool);
    CHECK(after == before);
    CHECK(pool.stats().respawns == 0);
    CHECK(pool.stats().tasks_cancelled == 1);
  });
}

TEST_CASE("a task past task_timeout with a grace fails with task_timeout and its outcome",
          "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .task_timeout = 100ms, .stop_grace = 30s});
    int before = co_await worker_pid(pool);
    std::exception_ptr error =
        co_await coproc::test::failure_of(pool.submit(polls_then_returns, 9));
    auto e = stopped_error(error);
    CHECK(e.code() == coproc::errc::task_timeout);
    CHECK(e.finished());
    REQUIRE(e.value<int>() != nullptr);
    CHECK(*e.value<int>() == 9);
    int after = co_await worker_pid(pool);
    CHECK(after == before);
    CHECK(pool.stats().respawns == 0);
    CHECK(pool.stats().tasks_failed == 1);
  });
}

TEST_CASE("submit_for with a grace throws task_timeout carrying the outcome", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    int before = co_await worker_pid(pool);  // the worker runs: the task starts at once
    std::exception_ptr error =
        co_await coproc::test::failure_of(pool.submit_for(300ms, polls_then_returns, 3));
    auto e = stopped_error(error);
    CHECK(e.code() == coproc::errc::task_timeout);
    CHECK(e.finished());
    REQUIRE(e.value<int>() != nullptr);
    CHECK(*e.value<int>() == 3);
    int after = co_await worker_pid(pool);
    CHECK(after == before);
    CHECK(pool.stats().respawns == 0);
  });
}

TEST_CASE("a task that throws when asked to stop hands its exception over", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    int before = co_await worker_pid(pool);
    std::exception_ptr error = co_await cancel_when_running(pool, throws_when_stopped);
    auto e = stopped_error(error);
    CHECK(e.code() == asio::error::operation_aborted);
    CHECK(e.finished());
    CHECK(e.value<int>() == nullptr);
    REQUIRE(e.task_exception());
    try {
      std::rethrow_exception(e.task_exception());
    } catch (const std::runtime_error& task) {
      CHECK(std::string(task.what()) == "stopped half-way");
    }
    int after = co_await worker_pid(pool);
    CHECK(after == before);
    CHECK(pool.stats().respawns == 0);
  });
}

TEST_CASE("a task that ignores the request is killed once the grace passed", "[stop]") {
  for (bool by_timeout : {false, true}) {
    reset_words();
    coproc::test::run_async([by_timeout](asio::io_context& ctx) -> asio::awaitable<void> {
      coproc::pool_options o{.workers = 1, .stop_grace = 100ms};
      if (by_timeout) {
        o.task_timeout = 100ms;
      }
      process_pool pool(ctx.get_executor(), o);
      int before = co_await worker_pid(pool);
      std::exception_ptr error;
      if (by_timeout) {
        error = co_await coproc::test::failure_of(pool.submit(ignores_stop));
      } else {
        error = co_await cancel_when_running(pool, ignores_stop);
      }
      auto e = stopped_error(error);
      CHECK(e.code() == (by_timeout ? std::error_code(coproc::errc::task_timeout)
                                    : std::error_code(asio::error::operation_aborted)));
      CHECK_FALSE(e.finished());
      CHECK(e.value<int>() == nullptr);
      CHECK_FALSE(e.task_exception());
      // Killed (SIGKILL from the pool) and replaced, as without a grace.
      int after = co_await worker_pid(pool);
      CHECK(after != before);
      co_await coproc::test::poll_until([&] { return pool.stats().respawns >= 1; }, 1ms, 10'000);
      CHECK(pool.stats().respawns == 1);
      CHECK(pool.stats().worker_crashes == 0);  // the pool's own kill
    });
  }
}

TEST_CASE("a task that crashes while it stops fails as stopped, not finished", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    int before = co_await worker_pid(pool);
    std::exception_ptr error = co_await cancel_when_running(pool, crashes_when_stopped);
    auto e = stopped_error(error);
    CHECK(e.code() == asio::error::operation_aborted);
    CHECK_FALSE(e.finished());
    int after = co_await worker_pid(pool);
    CHECK(after != before);
    co_await coproc::test::poll_until([&] { return pool.stats().respawns >= 1; }, 1ms, 10'000);
    CHECK(pool.stats().worker_crashes == 1);  // SIGSEGV, not the pool's kill
  });
}

TEST_CASE("stop_grace 0 keeps the immediate kill and the plain error", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    int before = co_await worker_pid(pool);
    std::exception_ptr error = co_await cancel_when_running(pool, polls_then_returns, 1);
    REQUIRE(error);
    bool stopped = false;
    try {
      std::rethrow_exception(error);
    } catch (const coproc::task_stopped_error&) {
      stopped = true;
    } catch (const std::system_error& e) {
      CHECK(e.code() == asio::error::operation_aborted);
    }
    CHECK_FALSE(stopped);
    int after = co_await worker_pid(pool);
    CHECK(after != before);
  });
}

TEST_CASE("a fresh task on the same worker sees no stop request", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    int before = co_await worker_pid(pool);
    std::exception_ptr first = co_await cancel_when_running(pool, polls_then_returns, 2);
    CHECK(stopped_error(first).finished());
    auto [pid, stop] = co_await pool.submit(pid_and_stop);
    CHECK(pid == before);
    CHECK_FALSE(stop);
    // And a task that polls runs to its own end only when asked again: a
    // second one is stopped by its own cancellation, not the first's.
    std::exception_ptr second = co_await cancel_when_running(pool, polls_then_returns, 4);
    auto e = stopped_error(second);
    REQUIRE(e.value<int>() != nullptr);
    CHECK(*e.value<int>() == 4);
  });
}

TEST_CASE("get_stop_token ends a loop, and is inert outside a task", "[stop]") {
  reset_words();
  CHECK_FALSE(coproc::this_task::stop_requested());
  CHECK_FALSE(coproc::this_task::get_stop_token().stop_possible());
  CHECK_FALSE(coproc::task_stop_token().stop_requested());
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    std::exception_ptr error = co_await cancel_when_running(pool, loops_on_token);
    auto e = stopped_error(error);
    REQUIRE(e.value<int>() != nullptr);
    CHECK(*e.value<int>() == 7);  // stop_possible() was true in the task
    CHECK(pool.stats().respawns == 0);
  });
}

TEST_CASE("tasks behind a stopping task run on its worker and see no request", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    int before = co_await worker_pid(pool);
    asio::cancellation_signal cancel;
    completion stopping;
    pool.async_submit(polls_then_returns, 8,
                      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, int) {
                        stopping = {true, e};
                      }));
    co_await until_started(1);
    // One task already in the worker's ring behind it, one sent after the
    // request (it waits in the pool: a stopping worker takes no new task).
    std::pair<int, bool> in_ring{0, true};
    std::pair<int, bool> later{0, true};
    int done = 0;
    pool.async_submit(pid_and_stop, [&](std::exception_ptr, std::pair<int, bool> v) {
      in_ring = v;
      ++done;
    });
    co_await asio::post(ctx, asio::use_awaitable);
    cancel.emit(asio::cancellation_type::terminal);
    pool.async_submit(pid_and_stop, [&](std::exception_ptr, std::pair<int, bool> v) {
      later = v;
      ++done;
    });
    co_await coproc::test::poll_until([&] { return stopping.done && done == 2; }, 1ms, 30'000);
    CHECK(stopped_error(stopping.error).finished());
    CHECK(in_ring.first == before);
    CHECK_FALSE(in_ring.second);
    CHECK(later.first == before);
    CHECK_FALSE(later.second);
    CHECK(pool.stats().respawns == 0);
  });
}

TEST_CASE("a thread the task started sees the stop request", "[stop]") {
  reset_words();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .stop_grace = 30s});
    std::exception_ptr error = co_await cancel_when_running(pool, polls_in_a_thread);
    auto e = stopped_error(error);
    REQUIRE(e.value<int>() != nullptr);
    CHECK(*e.value<int>() == 11);
  });
}
