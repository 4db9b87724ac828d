// What CPython's own pool tests (Lib/test/test_concurrent_futures/,
// _TestPool* of Lib/test/_test_multiprocessing.py) assert, judged by coproc's
// semantics: one regression test per defect of issue 20, under both start
// methods (spawn re-execs this test binary as the zygote).

#include <signal.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <chrono>
#include <cstddef>
#include <iterator>
#include <ranges>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/runtime/errc.hpp"
#include "failure_of.hpp"
#include "proc_stat.hpp"

namespace {

using coproc::process_pool;
using coproc::start_method;

/// An argument whose cereal save() throws on its `fail_at`-th call: the
/// pool sizes an argument (call 1), then writes it (call 2).
struct unsavable {
  int fail_at = 0;
  std::vector<char> filler;  // makes it large enough for the arena when wanted
  mutable int calls = 0;

  template <class Archive>
  void save(Archive& ar) const {
    if (++calls == fail_at) {
      throw std::runtime_error("cannot save this argument");
    }
    ar(fail_at, filler);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(fail_at, filler);
  }
};

int add(int a, int b) {
  return a + b;
}
int filler_size(const unsavable& u) {
  return static_cast<int>(u.filler.size());
}
int add_one_of(int x) {
  return x + 1;
}
int my_pid() {
  return static_cast<int>(::getpid());
}

/// A result larger than the inline limit whose encoding throws half-way
/// (the worker sizes it first, then writes it into the arena).
unsavable large_unsavable_result() {
  return unsavable{2, std::vector<char>(256 * 1024, 'x'), 0};
}
std::vector<char> large_result() {
  return std::vector<char>(256 * 1024, 'y');
}

void init_throws_late() {
  ::usleep(100'000);
  throw std::runtime_error("the late initializer gave up");
}
void init_segfaults() {
  ::raise(SIGSEGV);
}

coproc::pool_options with(start_method method, coproc::pool_options o) {
  o.start_method = method;
  return o;
}

const char* name_of(start_method m) {
  return m == start_method::spawn ? "spawn" : "fork_server";
}

using coproc::test::failure_of;

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  }
}

std::error_code code_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& x) {
    return x.code();
  } catch (...) {
    return {};
  }
}

/// A range whose iterator is C++20-only: move-only, no iterator_category,
/// post-increment returns void, ended by a sentinel (the values up to a negative one).
class int_source {
 public:
  class iterator {
   public:
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(const int* p) : p_(p) {}
    iterator(iterator&&) = default;
    iterator& operator=(iterator&&) = default;
    int operator*() const { return *p_; }
    iterator& operator++() {
      ++p_;
      return *this;
    }
    void operator++(int) { ++p_; }
    bool operator==(std::default_sentinel_t) const { return *p_ < 0; }

   private:
    const int* p_ = nullptr;
  };
  iterator begin() const { return iterator(values_); }
  std::default_sentinel_t end() const { return {}; }

 private:
  int values_[5] = {1, 2, 3, 4, -1};
};
static_assert(std::ranges::input_range<int_source>);
static_assert(!std::ranges::forward_range<int_source>);

asio::awaitable<void> pause(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

}  // namespace

TEST_CASE("an argument whose encoding throws fails only its task", "[cpython_parity]") {
  start_method method = GENERATE(start_method::fork_server, start_method::spawn);
  CAPTURE(name_of(method));
  coproc::test::run_async([method](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), with(method, {.workers = 2}));
    // Thrown while sizing (call 1), while writing inline (call 2), while
    // writing into the input arena (call 2, 256 KiB): each fails its own task.
    std::vector<unsavable> args(3);
    args[0].fail_at = 1;
    args[1].fail_at = 2;
    args[2].fail_at = 2;
    args[2].filler.resize(256 * 1024);
    for (const unsavable& arg : args) {
      std::exception_ptr e = co_await failure_of(pool.submit(filler_size, arg));
      REQUIRE(e);
      CHECK(what_of(e) == "cannot save this argument");
      CHECK(co_await pool.submit(add, 2, 3) == 5);
    }
    // A map item: the chunk holding it fails, the map rethrows that.
    std::vector<unsavable> items(3);
    items[1].fail_at = 2;
    std::exception_ptr e = co_await failure_of(pool.map(filler_size, items, 1));
    REQUIRE(e);
    // map names the failed items before the encoder's own message.
    CHECK(what_of(e) == "coproc::map: items [1, 2) of 3 failed: cannot save this argument");
    // A large argument that encodes fine still goes through the arena.
    unsavable large{0, std::vector<char>(300 * 1024), 0};
    int large_size = co_await pool.submit(filler_size, large);
    CHECK(large_size == 300 * 1024);
    auto s = pool.stats();
    CHECK(s.tasks_queued == 0);
    CHECK(s.worker_crashes == 0);
  });
}

TEST_CASE("a large result whose encoding throws half-way releases the worker's arena",
          "[cpython_parity]") {
  start_method method = GENERATE(start_method::fork_server, start_method::spawn);
  CAPTURE(name_of(method));
  coproc::test::run_async([method](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), with(method, {.workers = 1}));
    int pid = co_await pool.submit(my_pid);
    std::exception_ptr e = co_await failure_of(pool.submit(large_unsavable_result));
    REQUIRE(e);
    CHECK(what_of(e).find("cannot save this argument") != std::string::npos);
    // The next large result on the same worker: it hung until a timeout
    // killed the worker while the arena stayed marked busy.
    auto big = co_await pool.submit_for(std::chrono::seconds(5), large_result);
    CHECK(big.size() == 256 * 1024);
    CHECK(co_await pool.submit(my_pid) == pid);
  });
}

TEST_CASE("async_shutdown(drain) finishes when a worker retires during the drain",
          "[cpython_parity]") {
  start_method method = GENERATE(start_method::fork_server, start_method::spawn);
  CAPTURE(name_of(method));
  coproc::test::run_async(
      [method](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(),
                          with(method, {.workers = 1, .max_tasks_per_worker = 2}));
        int done = 0;
        for (int i = 0; i < 6; ++i) {
          pool.async_submit(add, i, 1, [&done, i](std::exception_ptr e, int v) {
            CHECK(!e);
            CHECK(v == i + 1);
            ++done;
          });
        }
        co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
        CHECK(done == 6);
        CHECK(pool.stats().respawns >= 2);
      },
      std::chrono::seconds(10));
}

TEST_CASE("an initializer that throws after a delay fails pending and later tasks",
          "[cpython_parity]") {
  start_method method = GENERATE(start_method::fork_server, start_method::spawn);
  CAPTURE(name_of(method));
  coproc::test::run_async(
      [method](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(),
                          with(method, {.workers = 2, .initializer = init_throws_late}));
        std::exception_ptr first = co_await failure_of(pool.submit(add, 1, 2));
        REQUIRE(first);
        CHECK(code_of(first) == coproc::errc::pool_broken);
        CHECK(what_of(first).find("initializer") != std::string::npos);
        CHECK(what_of(first).find("the late initializer gave up") != std::string::npos);
        std::exception_ptr later = co_await failure_of(pool.submit(add, 1, 2));
        REQUIRE(later);
        CHECK(code_of(later) == coproc::errc::pool_broken);
        CHECK(what_of(later).find("the late initializer gave up") != std::string::npos);
      },
      std::chrono::seconds(10));
}

TEST_CASE("an initializer that crashes fails the task and stops respawning", "[cpython_parity]") {
  start_method method = GENERATE(start_method::fork_server, start_method::spawn);
  CAPTURE(name_of(method));
  coproc::test::run_async(
      [method](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(),
                          with(method, {.workers = 2, .initializer = init_segfaults}));
        std::exception_ptr e = co_await failure_of(pool.submit(add, 1, 2));
        REQUIRE(e);
        CHECK(code_of(e) == coproc::errc::pool_broken);
        CHECK(what_of(e).find("initializer") != std::string::npos);
        CHECK(what_of(e).find("SIGSEGV") != std::string::npos);
        co_await pause(std::chrono::milliseconds(100));
        CHECK(pool.stats().respawns <= 2);
        CHECK(pool.stats().workers_alive == 0);
      },
      std::chrono::seconds(10));
}

TEST_CASE("stats() lists every live worker of an idle pool", "[cpython_parity]") {
  start_method method = GENERATE(start_method::fork_server, start_method::spawn);
  CAPTURE(name_of(method));
  coproc::test::run_async(
      [method](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(), with(method, {.workers = 3}));
        // Built, never used: the three workers start on their own.
        auto until_three = [&]() -> asio::awaitable<coproc::pool_stats> {
          auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
          auto s = pool.stats();
          while (s.worker_pids.size() != 3 && std::chrono::steady_clock::now() < deadline) {
            co_await pause(std::chrono::milliseconds(5));
            s = pool.stats();
          }
          co_return s;
        };
        auto s = co_await until_three();
        CHECK(s.workers_alive == 3);
        CHECK(s.worker_pids.size() == 3);
        for (pid_t pid : s.worker_pids) {
          CHECK(::kill(pid, 0) == 0);
        }
        // After a map, and once the pool rested.
        std::vector<int> items(30, 1);
        auto out = co_await pool.map(add_one_of, items);
        CHECK(out.size() == 30);
        co_await pause(std::chrono::milliseconds(100));
        s = co_await until_three();
        CHECK(s.workers_alive == 3);
        CHECK(s.worker_pids.size() == 3);
      },
      std::chrono::seconds(15));
}

TEST_CASE("map and map_unordered take a C++20-only input range", "[cpython_parity]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    auto out = co_await pool.map(add_one_of, int_source{});
    CHECK(out == std::vector<int>{2, 3, 4, 5});
#if !defined(__clang__) || __clang_major__ >= 15
    // clang 14 (the sanitizer compiler) cannot check libstdc++ 12's
    // istream_view against the range concepts at all, coproc or not.
    std::istringstream text("10 20 30");
    auto numbers = std::views::istream<int>(text);  // begin() only on a non-const view
    auto from_stream = co_await pool.map(add_one_of, numbers);
    CHECK(from_stream == std::vector<int>{11, 21, 31});
#endif
    auto stream = pool.map_unordered(add_one_of, int_source{});
    int sum = 0;
    while (auto r = co_await stream.next()) {
      sum += r->get();
    }
    CHECK(sum == 14);
  });
}

TEST_CASE("a pool of zero workers is refused", "[cpython_parity]") {
  asio::io_context ctx;
  CHECK_THROWS_AS(process_pool(ctx.get_executor(), {.workers = 0}), std::invalid_argument);
}

TEST_CASE("map_unordered starts its window at once", "[cpython_parity]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    auto stream = pool.map_unordered(add_one_of, std::vector<int>{1, 2, 3, 4, 5}, 3);
    auto s = pool.stats();
    // Three tasks accepted before the first next(): queued or in a worker's ring.
    CHECK(s.tasks_queued + s.workers_busy > 0);
    CHECK(stream.remaining() == 5);
    int sum = 0;
    while (auto r = co_await stream.next()) {
      sum += r->get();
    }
    CHECK(sum == 20);
  });
}
