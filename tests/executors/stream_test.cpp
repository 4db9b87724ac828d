// Streaming tasks (issue 18): a task's values reach its caller while it runs,
// in emission order, then the task's own end (its return, exception, crash
// or timeout); a slow reader holds the emitter back; destroying the stream
// or cancelling next() cancels the task. Real signals, real kills.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "async_test.hpp"
#include "coproc/coproc.hpp"
#include "poll_until.hpp"

namespace {

using namespace std::chrono_literals;

void count_to(coproc::emitter<std::int64_t>& out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    out(i);
  }
}

void three_then_throw(coproc::emitter<std::string>& out) {
  out("a");
  out("b");
  out("c");
  throw std::out_of_range("after three");
}

void five_then_crash(coproc::emitter<int>& out, int sig) {
  for (int i = 0; i < 5; ++i) {
    out(i);
  }
  ::raise(sig);
}

void one_then_sleep(coproc::emitter<int>& out) {
  out(1);
  std::this_thread::sleep_for(30s);
}

void forever(coproc::emitter<std::int64_t>& out) {
  for (std::int64_t i = 0;; ++i) {
    out(i);
  }
}

void emit_until_stopped(coproc::emitter<int>& out) {
  for (int i = 0; !coproc::this_task::stop_requested(); ++i) {
    out(i);
  }
}

void too_large(coproc::emitter<std::string>& out) {
  out(std::string(200 * 1024, 'x'));
}

/// A counter every process of the test sees: mapped before the pool forks
/// its zygote, so workers inherit it.
struct shared_counter {
  shared_counter() {
    void* p = ::mmap(nullptr, sizeof(std::atomic<std::int64_t>), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    value = new (p) std::atomic<std::int64_t>(0);
  }
  ~shared_counter() { ::munmap(value, sizeof *value); }
  std::atomic<std::int64_t>* value;
};

std::atomic<std::int64_t>* emitted_so_far = nullptr;

void count_each(coproc::emitter<int>& out, int n) {
  for (int i = 0; i < n; ++i) {
    out(i);
    emitted_so_far->fetch_add(1);
  }
}

}  // namespace

TEST_CASE("stream yields every value in emission order, then ends", "[process_pool][stream]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 2});
    auto s = pool.stream(count_to, std::int64_t{20000});
    std::int64_t expected = 0;
    bool in_order = true;
    while (auto v = co_await s.next()) {
      in_order = in_order && *v == expected;
      ++expected;
      while ((v = s.try_next())) {
        in_order = in_order && *v == expected;
        ++expected;
      }
    }
    CHECK(in_order);
    CHECK(expected == 20000);
    auto after = co_await s.next();  // an ended stream stays ended
    CHECK_FALSE(after.has_value());
    CHECK(pool.stats().tasks_completed == 1);
  });
}

TEST_CASE("a captureless lambda streams too", "[process_pool][stream]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    auto s = pool.stream(
        [](coproc::emitter<std::string>& out, std::string word, int times) {
          for (int i = 0; i < times; ++i) {
            out(word + std::to_string(i));
          }
        },
        "w", 3);
    std::vector<std::string> got;
    while (auto v = co_await s.next()) {
      got.push_back(*v);
    }
    CHECK(got == std::vector<std::string>{"w0", "w1", "w2"});
  });
}

TEST_CASE("the values emitted before a task's exception come first", "[process_pool][stream]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    auto s = pool.stream(three_then_throw);
    std::vector<std::string> got;
    bool threw = false;
    try {
      while (auto v = co_await s.next()) {
        got.push_back(*v);
      }
    } catch (const std::out_of_range& e) {
      threw = std::string(e.what()) == "after three";
    }
    CHECK(got == std::vector<std::string>{"a", "b", "c"});
    CHECK(threw);
  });
}

TEST_CASE("the values emitted before a crash come first, then the crash",
          "[process_pool][stream]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    for (int sig : {SIGSEGV, SIGKILL}) {
      auto s = pool.stream(five_then_crash, sig);
      int values = 0;
      int signal = 0;
      try {
        while (auto v = co_await s.next()) {
          CHECK(*v == values);
          ++values;
        }
      } catch (const coproc::worker_crashed_error& e) {
        signal = e.status().signal;
      }
      CHECK(values == 5);
      CHECK(signal == sig);
    }
    int after = co_await pool.submit([](int x) { return x + 1; }, 1);  // the pool goes on
    CHECK(after == 2);
  });
}

TEST_CASE("a slow reader holds the emitter back at stream_buffer values",
          "[process_pool][stream]") {
  shared_counter counter;
  emitted_so_far = counter.value;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    constexpr std::size_t buffer = 8;
    coproc::process_pool pool(ctx, {.workers = 1, .stream_buffer = buffer});
    auto s = pool.stream(count_each, 1000);
    // Nothing read yet: the task emits its first `buffer` values and blocks.
    co_await coproc::test::poll_until([&] { return counter.value->load() >= 8; }, 10ms, 500);
    asio::steady_timer pause(ctx, 100ms);
    co_await pause.async_wait(asio::use_awaitable);
    CHECK(counter.value->load() == static_cast<std::int64_t>(buffer));
    int read = 0;
    while (auto v = co_await s.next()) {
      CHECK(*v == read);
      ++read;
      // Never more than `buffer` values past what was read (the grant
      // follows the reads): checked at every read.
      CHECK(counter.value->load() <= read + static_cast<std::int64_t>(buffer));
    }
    CHECK(read == 1000);
  });
}

TEST_CASE("destroying a stream cancels its task; the worker is replaced",
          "[process_pool][stream]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1, .stream_buffer = 16});
    {
      auto s = pool.stream(forever);
      for (int i = 0; i < 3; ++i) {
        auto v = co_await s.next();
        CHECK(v == std::optional<std::int64_t>(i));
      }
    }
    co_await coproc::test::poll_until([&] { return pool.stats().respawns == 1; }, 10ms, 500);
    auto st = pool.stats();
    CHECK(st.tasks_cancelled == 1);
    CHECK(st.respawns == 1);
    int after = co_await pool.submit([](int x) { return x * 3; }, 5);
    CHECK(after == 15);
  });
}

TEST_CASE("a streaming task blocked on its reader stops within the grace, its worker kept",
          "[process_pool][stream][stop]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // The grace is long: a task that did not see the request would be
    // killed only after it, and the worker replaced.
    coproc::process_pool pool(
        ctx, {.workers = 1, .stop_grace = std::chrono::seconds(20), .stream_buffer = 4});
    const pid_t worker = co_await pool.submit([] { return ::getpid(); });
    {
      auto s = pool.stream(emit_until_stopped);
      auto first = co_await s.next();
      CHECK(first == std::optional<int>(0));
      // Unread values reach the buffer: the emitter waits for this reader,
      // which goes away (the stream's destruction cancels the task).
    }
    co_await coproc::test::poll_until([&] { return pool.stats().tasks_cancelled == 1; }, 10ms,
                                      1000);
    auto st = pool.stats();
    CHECK(st.tasks_cancelled == 1);
    CHECK(st.respawns == 0);
    CHECK(st.worker_crashes == 0);
    pid_t after = co_await pool.submit([] { return ::getpid(); });
    CHECK(after == worker);
  });
}

TEST_CASE("cancelling a waiting next() cancels the task", "[process_pool][stream]") {
  using namespace asio::experimental::awaitable_operators;
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    auto s = pool.stream(one_then_sleep);
    auto first = co_await s.next();
    CHECK(first == std::optional<int>(1));
    asio::steady_timer t(ctx, 50ms);
    // The timer wins; the operator cancels the next() that waits (what that
    // next() threw, operation_aborted, the operator drops).
    auto r = co_await (s.next() || t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);
    bool ended_aborted = false;
    try {
      co_await s.next();
    } catch (const std::system_error& e) {
      ended_aborted = e.code() == asio::error::operation_aborted;
    }
    CHECK(ended_aborted);
    CHECK(pool.stats().tasks_cancelled == 1);
  });
}

TEST_CASE("a stream ends with task_timeout after its values", "[process_pool][stream]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1, .task_timeout = 200ms});
    auto s = pool.stream(one_then_sleep);
    int values = 0;
    bool timed_out = false;
    try {
      while (auto v = co_await s.next()) {
        ++values;
      }
    } catch (const std::system_error& e) {
      timed_out = e.code() == coproc::errc::task_timeout;
    }
    CHECK(values == 1);
    CHECK(timed_out);
  });
}

TEST_CASE("a value larger than a ring frame fails in the task", "[process_pool][stream]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    auto s = pool.stream(too_large);
    bool too_big = false;
    try {
      co_await s.next();
    } catch (const std::system_error& e) {
      too_big = e.code() == coproc::errc::payload_too_large;
    }
    CHECK(too_big);
    CHECK(pool.stats().respawns == 0);  // the task's own exception: the worker goes on
  });
}

TEST_CASE("values past the granted credit are refused", "[stream]") {
  // What the pool checks when a worker (or a task scribbling on its ring)
  // sends more than its reader allowed: the batch is not taken.
  auto st = std::make_shared<coproc::detail::stream_state<int>>(4);
  std::vector<int> batch{1, 2, 3, 4};
  st->push(batch);
  CHECK(st->values.size() == 4);
  std::vector<int> more{5};
  bool refused = false;
  try {
    st->push(more);
  } catch (const std::system_error& e) {
    refused = e.code() == coproc::errc::frame_corrupt;
  }
  CHECK(refused);
  CHECK(st->values.size() == 4);
}
