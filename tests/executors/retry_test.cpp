// Retries after a crash (pool_options::retries, coproc::retry_policy): real
// crashes (signals, exits, an rlimit) and real timeouts on a task's first
// attempts, counted through a shared mapping that outlives the workers.

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <asio.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "async_test.hpp"
#include "coproc/executors/emitter.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/executors/retry_policy.hpp"
#include "coproc/runtime/worker_crashed_error.hpp"
#include "poll_until.hpp"

namespace {

using coproc::process_pool;
using coproc::retry_policy;

// Attempts started, in memory every worker shares with the test: mapped
// before any pool, so each pool's zygote and workers inherit it.
std::atomic<int>* attempts_word() {
  static auto* word = [] {
    void* p = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::abort();
    }
    return new (p) std::atomic<int>(0);
  }();
  return word;
}

/// Call before the pool is created.
void reset_attempts() {
  attempts_word()->store(0);
}

int attempts() {
  return attempts_word()->load();
}

enum crash_kind : int { segv, abort_call, exit_3, sigkill, past_rlimit };

char* volatile sink = nullptr;  // an allocation the compiler may not leave out

// An allocation past RLIMIT_AS in code that cannot throw: std::terminate.
void allocate_past_limit() noexcept {
  sink = new char[std::size_t{2} << 30];
  sink[0] = 1;
}

void crash(int kind) {
  switch (kind) {
    case segv:
      ::raise(SIGSEGV);
      break;
    case abort_call:
      std::abort();
    case exit_3:
      ::_exit(3);
    case sigkill:
      ::kill(::getpid(), SIGKILL);  // as the OOM killer ends a worker
      break;
    case past_rlimit:
      allocate_past_limit();
      break;
    default:
      break;
  }
}

// Crashes its first `crashes` attempts; returns the attempt that succeeded.
int crash_first(int crashes, int kind) {
  int n = attempts_word()->fetch_add(1) + 1;
  if (n <= crashes) {
    crash(kind);
  }
  return n;
}

// Hangs on its first `hangs` attempts (until the pool kills its worker).
int hang_first(int hangs) {
  int n = attempts_word()->fetch_add(1) + 1;
  while (n <= hangs) {
    ::pause();
  }
  return n;
}

int throw_once() {
  attempts_word()->fetch_add(1);
  throw std::runtime_error("the task's own error");
}

int add(int a, int b) {
  return a + b;
}

void emit_then_crash(coproc::emitter<int>& out) {
  attempts_word()->fetch_add(1);
  out(1);
  ::raise(SIGSEGV);
}

// Outside the coroutines that call them: GCC 12 reports a false
// mismatched-new-delete on asio's frame when these checks are inside.
void check_three_segv_attempts(const coproc::worker_crashed_error& e) {
  CHECK(e.code() == coproc::errc::worker_crashed);
  CHECK(e.status().signal == SIGSEGV);
  REQUIRE(e.attempts().size() == 3);
  for (const auto& a : e.attempts()) {
    CHECK(a.signal == SIGSEGV);
  }
  std::string what = e.what();
  CHECK(what.find("after 3 attempts") != std::string::npos);
  CHECK(what.find("attempt 1: worker ") != std::string::npos);
  CHECK(what.find("attempt 3: worker ") != std::string::npos);
  CHECK(what.find("signal 11 (SIGSEGV)") != std::string::npos);
  coproc::worker_crashed_error copy = e;  // copies share the attempts
  CHECK(&copy.attempts() == &e.attempts());
}

std::error_code code_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& se) {
    return se.code();
  } catch (...) {
    return {};
  }
}

}  // namespace

TEST_CASE("a task whose worker crashed runs again and succeeds within its retries", "[retry]") {
  for (int kind : {segv, abort_call, exit_3, sigkill}) {
    reset_attempts();
    coproc::test::run_async([kind](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2, .retries = 2});
      int attempt = co_await pool.submit(crash_first, 2, kind);
      CHECK(attempt == 3);
      CHECK(attempts() == 3);
      auto s = pool.stats();
      CHECK(s.tasks_retried == 2);
      CHECK(s.worker_crashes == 2);
      CHECK(s.tasks_completed == 1);
      CHECK(s.tasks_failed == 0);
    });
  }
}

TEST_CASE("a task that crashes on every attempt fails with every attempt's reason", "[retry]") {
  reset_attempts();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2, .retries = 2});
    try {
      co_await pool.submit(crash_first, 10, static_cast<int>(segv));
      FAIL("no exception");
    } catch (const coproc::worker_crashed_error& e) {
      check_three_segv_attempts(e);
    }
    CHECK(attempts() == 3);
    auto s = pool.stats();
    CHECK(s.tasks_retried == 2);
    CHECK(s.tasks_failed == 1);
    int v = co_await pool.submit(add, 2, 3);  // the pool goes on
    CHECK(v == 5);
  });
}

TEST_CASE("a worker past its address-space limit is a crash that is retried", "[retry]") {
  reset_attempts();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2,
                                           .retries = 1,
                                           .max_payload = std::size_t{1} << 20,
                                           .limits = {.address_space = std::size_t{1} << 30}});
    int attempt = co_await pool.submit(crash_first, 1, static_cast<int>(past_rlimit));
    CHECK(attempt == 2);
    CHECK(pool.stats().tasks_retried == 1);
  });
}

TEST_CASE("a per-call retry_policy overrides the pool's retries", "[retry]") {
  SECTION("more retries than the pool's") {
    reset_attempts();
    coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2});
      int attempt = co_await pool.submit(retry_policy{.retries = 1}, crash_first, 1,
                                         static_cast<int>(exit_3));
      CHECK(attempt == 2);
      int again = co_await pool.async_submit(retry_policy{.retries = 2}, crash_first, 4,
                                             static_cast<int>(segv), asio::use_awaitable);
      CHECK(again == 5);  // attempts 3 and 4 crashed
      CHECK(pool.stats().tasks_retried == 3);
    });
  }
  SECTION("none where the pool retries") {
    reset_attempts();
    coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2, .retries = 3});
      try {
        co_await pool.submit(retry_policy{}, crash_first, 1, static_cast<int>(segv));
        FAIL("no exception");
      } catch (const coproc::worker_crashed_error& e) {
        CHECK(e.attempts().size() == 1);
        CHECK(std::string(e.what()).find("attempt") == std::string::npos);
      }
      CHECK(attempts() == 1);
      CHECK(pool.stats().tasks_retried == 0);
    });
  }
}

TEST_CASE("a task's own exception is not retried", "[retry]") {
  reset_attempts();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2, .retries = 3});
    try {
      co_await pool.submit(throw_once);
      FAIL("no exception");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "the task's own error");
    }
    CHECK(attempts() == 1);
    CHECK(pool.stats().tasks_retried == 0);
  });
}

TEST_CASE("a task past task_timeout is retried only when asked", "[retry]") {
  using namespace std::chrono_literals;
  SECTION("not by default") {
    reset_attempts();
    coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2, .task_timeout = 200ms, .retries = 2});
      try {
        co_await pool.submit(hang_first, 1);
        FAIL("no exception");
      } catch (const std::system_error& e) {
        CHECK(e.code() == coproc::errc::task_timeout);
      }
      CHECK(attempts() == 1);
      CHECK(pool.stats().tasks_retried == 0);
    });
  }
  SECTION("with retry_timeouts") {
    reset_attempts();
    coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(
          ctx.get_executor(),
          {.workers = 2, .task_timeout = 200ms, .retries = 2, .retry_timeouts = true});
      int attempt = co_await pool.submit(hang_first, 1);
      CHECK(attempt == 2);
      CHECK(pool.stats().tasks_retried == 1);
    });
  }
  SECTION("with a per-call on_timeout, and every attempt timed out") {
    reset_attempts();
    coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
      process_pool pool(ctx.get_executor(), {.workers = 2, .task_timeout = 200ms});
      int attempt =
          co_await pool.submit(retry_policy{.retries = 1, .on_timeout = true}, hang_first, 1);
      CHECK(attempt == 2);
      try {
        co_await pool.submit(retry_policy{.retries = 1, .on_timeout = true}, hang_first, 10);
        FAIL("no exception");
      } catch (const std::system_error& e) {
        CHECK(e.code() == coproc::errc::task_timeout);
        std::string what = e.what();
        CHECK(what.find("after 2 attempts") != std::string::npos);
        CHECK(what.find("attempt 2: worker ") != std::string::npos);
      }
      CHECK(pool.stats().tasks_retried == 2);
    });
  }
}

namespace {

// Submits a task that hangs, awaits `stop(signal)` once it runs (the signal
// is bound to the task's cancellation slot), and returns the task's error.
template <class Stop>
asio::awaitable<std::exception_ptr> stop_once_running(process_pool& pool, Stop stop) {
  asio::cancellation_signal signal;
  std::exception_ptr got;
  bool done = false;
  pool.async_submit(hang_first, 10,
                    asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e, int) {
                      got = e;
                      done = true;
                    }));
  co_await coproc::test::poll_until([] { return attempts() == 1; }, std::chrono::milliseconds(5),
                                    2000);
  co_await stop(signal);
  co_await coproc::test::poll_until([&] { return done; }, std::chrono::milliseconds(5), 2000);
  co_return got;
}

}  // namespace

TEST_CASE("a cancelled task is not retried", "[retry]") {
  reset_attempts();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .retries = 3, .retry_timeouts = true});
    std::exception_ptr got =
        co_await stop_once_running(pool, [](asio::cancellation_signal& s) -> asio::awaitable<void> {
          s.emit(asio::cancellation_type::terminal);
          co_return;
        });
    CHECK(code_of(got) == asio::error::operation_aborted);
    // One worker: this task runs once the killed worker's death was
    // accounted and its replacement forked.
    int v = co_await pool.submit(add, 1, 2);
    CHECK(v == 3);
    CHECK(attempts() == 1);
    auto s = pool.stats();
    CHECK(s.tasks_retried == 0);
    CHECK(s.tasks_cancelled == 1);
  });
}

TEST_CASE("a task stopped by a shutdown is not retried", "[retry]") {
  reset_attempts();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1, .retries = 3});
    std::exception_ptr got =
        co_await stop_once_running(pool, [&](asio::cancellation_signal&) -> asio::awaitable<void> {
          co_await pool.async_shutdown(coproc::shutdown_mode::cancel, asio::use_awaitable);
        });
    CHECK(code_of(got) == coproc::errc::pool_stopped);
    CHECK(attempts() == 1);
    CHECK(pool.stats().tasks_retried == 0);
  });
}

TEST_CASE("a streaming task is never retried", "[retry]") {
  reset_attempts();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2, .retries = 2});
    auto s = pool.stream(emit_then_crash);
    int values = 0;
    int signal = 0;
    try {
      while (auto v = co_await s.next()) {
        ++values;
      }
    } catch (const coproc::worker_crashed_error& e) {
      signal = e.status().signal;
    }
    CHECK(values == 1);  // read once: a second run would emit it again
    CHECK(signal == SIGSEGV);
    CHECK(attempts() == 1);
    CHECK(pool.stats().tasks_retried == 0);
  });
}

TEST_CASE("a task asked to stop at its timeout is not retried", "[retry]") {
  using namespace std::chrono_literals;
  reset_attempts();
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2,
                                           .task_timeout = 200ms,
                                           .stop_grace = 100ms,
                                           .retries = 2,
                                           .retry_timeouts = true});
    std::error_code code;
    try {
      co_await pool.submit(hang_first, 10);  // ignores the request: killed after the grace
    } catch (const std::system_error& e) {
      code = e.code();
    }
    CHECK(code == coproc::errc::task_timeout);
    CHECK(attempts() == 1);
    CHECK(pool.stats().tasks_retried == 0);
  });
}
