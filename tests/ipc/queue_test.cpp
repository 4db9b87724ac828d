#include "coproc/ipc/queue.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_predicate.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "async_test.hpp"
#include "coproc/ipc/shared_memory.hpp"
#include "sync_test_support.hpp"

using namespace std::chrono_literals;
using coproc::test::fork_child;
using coproc::test::latch_pipe;
using coproc::test::wait_child;

namespace {

// Exit codes a child reports.
constexpr int ok = 0;
constexpr int got_closed = 7;

bool is_closed(const std::system_error& e) {
  return e.code() == coproc::errc::queue_closed;
}

// True once `pid` sleeps in futex(2) (read from /proc/PID/syscall): lets a
// test act only once a child is really blocked, without sleeping.
bool until_blocked_in_futex(pid_t pid) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  std::string path = "/proc/" + std::to_string(pid) + "/syscall";
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream f(path);
    long nr = -1;
    if (f >> nr && nr == SYS_futex) {
      return true;
    }
    std::this_thread::yield();
  }
  return false;
}

std::size_t count_entries(const char* dir) {
  std::size_t n = 0;
  if (DIR* d = ::opendir(dir)) {
    while (::readdir(d) != nullptr) {
      ++n;
    }
    ::closedir(d);
  }
  return n;
}

// A cereal type that can stop in the middle of its own encoding or decoding
// (inside the queue's locked section) when `hang` is set and the process
// armed it: it signals `hang_latch`, then waits to be killed.
std::atomic<bool> hang_armed{false};
int hang_latch = -1;
int hang_calls = 0;

[[noreturn]] void signal_and_wait() {
  char c = 1;
  while (::write(hang_latch, &c, 1) != 1) {
  }
  for (;;) {
    ::pause();
  }
}

struct hanger {
  std::string text;
  bool hang = false;

  template <class Archive>
  void save(Archive& ar) const {
    ar(text, hang);
    // encoded_size() runs save() once to count; the second call writes into
    // the ring, past what the queue has published.
    if (hang && hang_armed.load() && ++hang_calls == 2) {
      signal_and_wait();
    }
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(text, hang);
    if (hang && hang_armed.load()) {
      signal_and_wait();
    }
  }
};

}  // namespace

TEST_CASE("FIFO order between one producer and one consumer process", "[queue]") {
  coproc::queue<std::uint64_t> q({.max_items = 64});
  constexpr std::uint64_t n = 100'000;
  pid_t pid = fork_child([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      q.put(i);
    }
    return ok;
  });
  std::uint64_t bad = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (q.get() != i) {
      ++bad;
    }
  }
  CHECK(bad == 0);
  CHECK(wait_child(pid) == ok);
  CHECK(q.empty());
}

TEST_CASE("variable-size items wrap around a small ring in order", "[queue]") {
  coproc::queue<std::string> q({.max_items = 1000, .max_bytes = 4096});
  REQUIRE(q.max_bytes() == 4096);
  auto item = [](int i) {
    return std::string(static_cast<std::size_t>(i * 37 % 1500), 'a' + i % 26);
  };
  constexpr int n = 20'000;
  pid_t pid = fork_child([&] {
    for (int i = 0; i < n; ++i) {
      q.put(item(i));
    }
    return ok;
  });
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    if (q.get() != item(i)) {
      ++bad;
    }
  }
  CHECK(bad == 0);
  CHECK(wait_child(pid) == ok);
}

TEST_CASE("2 producers and 2 consumer processes deliver 100k items exactly once", "[queue]") {
  coproc::queue<std::uint64_t> q({.max_items = 256});
  struct tally {
    std::uint64_t count, sum, sum_sq, order_errors;
  };
  coproc::shared_memory seg(4096);
  auto* tallies = reinterpret_cast<tally*>(seg.data());
  constexpr std::uint64_t per_producer = 50'000;
  auto value = [](std::uint64_t p, std::uint64_t i) { return (p << 32) | i; };

  std::vector<pid_t> consumers;
  for (int c = 0; c < 2; ++c) {
    consumers.push_back(fork_child([&, c] {
      tally t{};
      std::uint64_t next[2] = {0, 0};  // per producer, items arrive in order
      try {
        for (;;) {
          std::uint64_t v = q.get();
          std::uint64_t p = v >> 32, i = v & 0xffffffff;
          if (p > 1 || i < next[p]) {
            ++t.order_errors;
          } else {
            next[p] = i + 1;
          }
          ++t.count;
          t.sum += v;
          t.sum_sq += v * v;
        }
      } catch (const std::system_error& e) {
        tallies[c] = t;
        return is_closed(e) ? ok : 1;
      }
    }));
  }
  std::vector<pid_t> producers;
  for (std::uint64_t p = 0; p < 2; ++p) {
    producers.push_back(fork_child([&, p] {
      for (std::uint64_t i = 0; i < per_producer; ++i) {
        q.put(value(p, i));
      }
      return ok;
    }));
  }
  for (pid_t pid : producers) {
    CHECK(wait_child(pid) == ok);
  }
  q.close();  // consumers drain what is left, then see queue_closed
  for (pid_t pid : consumers) {
    CHECK(wait_child(pid) == ok);
  }
  std::uint64_t count = 0, sum = 0, sum_sq = 0, expect_sum = 0, expect_sq = 0;
  for (int c = 0; c < 2; ++c) {
    count += tallies[c].count;
    sum += tallies[c].sum;
    sum_sq += tallies[c].sum_sq;
    CHECK(tallies[c].order_errors == 0);
  }
  for (std::uint64_t p = 0; p < 2; ++p) {
    for (std::uint64_t i = 0; i < per_producer; ++i) {
      expect_sum += value(p, i);
      expect_sq += value(p, i) * value(p, i);
    }
  }
  CHECK(count == 2 * per_producer);
  CHECK(sum == expect_sum);
  CHECK(sum_sq == expect_sq);
  CHECK(q.empty());
}

TEST_CASE("a full queue blocks put; timed put times out; a get makes room", "[queue]") {
  coproc::queue<int> q({.max_items = 4});
  for (int i = 0; i < 4; ++i) {
    REQUIRE(q.try_put(i));
  }
  CHECK_FALSE(q.try_put(4));
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(q.try_put_for(4, 20ms));
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  CHECK(q.size() == 4);

  // A child blocked in put completes once the parent gets one.
  pid_t pid = fork_child([&] {
    q.put(4);
    return ok;
  });
  REQUIRE(until_blocked_in_futex(pid));
  CHECK(q.get() == 0);
  CHECK(wait_child(pid) == ok);
  for (int i = 1; i <= 4; ++i) {
    CHECK(q.get() == i);
  }
  CHECK_FALSE(q.try_get().has_value());
  CHECK_FALSE(q.try_get_for(5ms).has_value());
}

TEST_CASE("the byte bound blocks put and refuses items that can never fit", "[queue]") {
  coproc::queue<std::string> q({.max_items = 1000, .max_bytes = 4096});
  std::string big(1500, 'x');
  CHECK(q.try_put(big));
  CHECK(q.try_put(big));
  CHECK_FALSE(q.try_put_for(big, 1ms));  // 3 x 1.5 KB > 4 KiB
  CHECK(q.try_put(std::string(100, 'y')));
  std::string huge(q.max_item_bytes(), 'z');
  try {
    q.put(huge);
    FAIL("put of an item larger than max_item_bytes() did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::frame_too_large);
  }
  CHECK(q.get() == big);
  CHECK(q.size() == 2);
}

TEST_CASE("close: items already queued are drained, then queue_closed", "[queue]") {
  coproc::queue<int> q;
  q.put(1);
  q.put(2);
  q.close();
  CHECK(q.closed());
  CHECK_THROWS_MATCHES(q.put(3), std::system_error,
                       Catch::Matchers::Predicate<std::system_error>(is_closed));
  CHECK(q.get() == 1);
  CHECK(q.try_get() == std::optional<int>(2));
  CHECK_THROWS_MATCHES(q.get(), std::system_error,
                       Catch::Matchers::Predicate<std::system_error>(is_closed));
  CHECK_THROWS_MATCHES(q.try_get_for(1s), std::system_error,
                       Catch::Matchers::Predicate<std::system_error>(is_closed));
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    auto [ec1] = co_await q.async_put(4, asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec1 == coproc::errc::queue_closed);
    auto [ec2, v] = co_await q.async_get(asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec2 == coproc::errc::queue_closed);
  });
}

TEST_CASE("close wakes every waiter: blocked gets, blocked puts, async get", "[queue]") {
  coproc::queue<int> empty_q;
  coproc::queue<int> full_q({.max_items = 1});
  full_q.put(0);
  auto blocked_get = [&] {
    try {
      empty_q.get();
      return 1;
    } catch (const std::system_error& e) {
      return is_closed(e) ? got_closed : 2;
    }
  };
  auto blocked_put = [&] {
    try {
      full_q.put(1);
      return 1;
    } catch (const std::system_error& e) {
      return is_closed(e) ? got_closed : 2;
    }
  };
  std::vector<pid_t> getters{fork_child(blocked_get), fork_child(blocked_get)};
  pid_t putter = fork_child(blocked_put);
  for (pid_t pid : getters) {
    REQUIRE(until_blocked_in_futex(pid));
  }
  REQUIRE(until_blocked_in_futex(putter));
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    // close() runs from the loop while this coroutine's async_get waits.
    asio::post(ctx, [&] {
      empty_q.close();
      full_q.close();
    });
    auto [ec, v] = co_await empty_q.async_get(asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(ec == coproc::errc::queue_closed);
  });
  for (pid_t pid : getters) {
    CHECK(wait_child(pid) == got_closed);
  }
  CHECK(wait_child(putter) == got_closed);
  CHECK(full_q.get() == 0);  // still drained after close
}

TEST_CASE("async_get in the loop receives from a producer process; the loop stays free",
          "[queue]") {
  coproc::queue<std::string> q({.max_items = 8});
  latch_pipe go;
  constexpr int n = 5000;
  pid_t pid = fork_child([&] {
    go.wait();
    for (int i = 0; i < n; ++i) {
      q.put(std::to_string(i));
    }
    return ok;
  });
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    // While async_get waits for the first item, a timer still fires: the
    // loop thread is not blocked. The timer releases the producer.
    asio::steady_timer t(ctx, 1ms);
    t.async_wait([&](std::error_code) { go.signal(); });
    int bad = 0;
    for (int i = 0; i < n; ++i) {
      std::string v = co_await q.async_get(asio::use_awaitable);
      if (v != std::to_string(i)) {
        ++bad;
      }
    }
    CHECK(bad == 0);
  });
  CHECK(wait_child(pid) == ok);
}

TEST_CASE("on the epoll backend async_get and async_put wait without a watcher thread", "[queue]") {
  // Each wait rides the queue's futex_doorbell (an eventfd the loop watches);
  // a futex word alone would take the service's watcher thread. Two queues
  // of one item: most puts wait for room, most gets for an item (one queue
  // both ways would let the parent's first get take the child's last item).
  coproc::queue<std::uint64_t> to_child({.max_items = 1});
  coproc::queue<std::uint64_t> from_child({.max_items = 1});
  latch_pipe go;
  constexpr int n = 2000;
  // The child reports the parent's threads while the parent's loop waits
  // for room (its first put filled the queue), as its exit code.
  const std::string parent_tasks = "/proc/" + std::to_string(::getpid()) + "/task";
  pid_t pid = fork_child([&] {
    go.wait();
    std::this_thread::sleep_for(50ms);
    const int threads = static_cast<int>(count_entries(parent_tasks.c_str())) - 2;
    for (int i = 0; i < n; ++i) {
      if (to_child.get() != static_cast<std::uint64_t>(i)) {
        return 100;
      }
    }
    for (int i = 0; i < n; ++i) {
      from_child.put(static_cast<std::uint64_t>(i));
    }
    return threads;
  });
  int bad = 0;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::uring_service::install(ctx, {.backend = coproc::io_backend::epoll});
    go.signal();
    for (int i = 0; i < n; ++i) {
      co_await to_child.async_put(static_cast<std::uint64_t>(i), asio::use_awaitable);
    }
    for (int i = 0; i < n; ++i) {
      bad += co_await from_child.async_get(asio::use_awaitable) != static_cast<std::uint64_t>(i);
    }
  });
  CHECK(wait_child(pid) == 1);  // the loop's thread alone
  CHECK(bad == 0);
}

TEST_CASE("get_some and async_get_some take batches in FIFO order", "[queue]") {
  coproc::queue<std::uint64_t> q({.max_items = 100});
  constexpr std::uint64_t n = 20'000;
  pid_t pid = fork_child([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      q.put(i);
    }
    return ok;
  });
  std::uint64_t next = 0, bad = 0;
  std::size_t largest = 0;
  while (next < n / 2) {
    for (std::uint64_t v : q.get_some(64)) {
      bad += v != next++ ? 1 : 0;
    }
  }
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    while (next < n) {
      std::vector<std::uint64_t> batch = co_await q.async_get_some(64, asio::use_awaitable);
      largest = std::max(largest, batch.size());
      for (std::uint64_t v : batch) {
        bad += v != next++ ? 1 : 0;
      }
    }
  });
  CHECK(bad == 0);
  CHECK(next == n);
  CHECK(largest <= 64);
  CHECK(wait_child(pid) == ok);
  q.put(1);
  q.close();
  CHECK(q.get_some(10) == std::vector<std::uint64_t>{1});
  CHECK_THROWS_AS(q.get_some(10), std::system_error);
}

TEST_CASE("async_put in the loop feeds a consumer process through a tiny queue", "[queue]") {
  coproc::queue<std::uint64_t> q({.max_items = 2});
  constexpr std::uint64_t n = 5000;
  pid_t pid = fork_child([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      if (q.get() != i) {
        return 1;
      }
    }
    return ok;
  });
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    for (std::uint64_t i = 0; i < n; ++i) {
      co_await q.async_put(i, asio::use_awaitable);
    }
  });
  CHECK(wait_child(pid) == ok);
}

TEST_CASE("cancelled async_get and async_put complete with operation_aborted, take nothing",
          "[queue]") {
  coproc::queue<int> q({.max_items = 1});
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    // get on an empty queue, cancelled by a timer through ||.
    asio::steady_timer t(ctx, 5ms);
    auto r = co_await (q.async_get(asio::use_awaitable) || t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);

    // Through a cancellation_signal, with the error seen.
    asio::cancellation_signal sig;
    bool done = false;
    std::error_code got;
    q.async_get(asio::bind_cancellation_slot(sig.slot(),
                                             asio::bind_executor(ctx, [&](std::error_code ec, int) {
                                               got = ec;
                                               done = true;
                                             })));
    asio::steady_timer t2(ctx, 2ms);
    co_await t2.async_wait(asio::use_awaitable);
    CHECK_FALSE(done);
    sig.emit(asio::cancellation_type::terminal);
    while (!done) {
      co_await asio::post(ctx, asio::use_awaitable);
    }
    CHECK(got == asio::error::operation_aborted);

    // put on a full queue, cancelled: the item is not enqueued.
    co_await q.async_put(1, asio::use_awaitable);
    asio::steady_timer t3(ctx, 5ms);
    auto r2 = co_await (q.async_put(2, asio::use_awaitable) || t3.async_wait(asio::use_awaitable));
    CHECK(r2.index() == 1);
    CHECK(q.size() == 1);
    int v = co_await q.async_get(asio::use_awaitable);
    CHECK(v == 1);
    CHECK(q.empty());
  });
}

TEST_CASE("a getter killed while blocked loses nothing; another getter still wakes", "[queue]") {
  coproc::queue<int> q;
  pid_t victim = fork_child([&] {
    q.get();
    return 1;
  });
  REQUIRE(until_blocked_in_futex(victim));
  pid_t survivor = fork_child([&] { return q.get() == 42 ? ok : 1; });
  REQUIRE(until_blocked_in_futex(survivor));
  ::kill(victim, SIGKILL);
  CHECK(wait_child(victim) == 128 + SIGKILL);
  q.put(42);
  CHECK(wait_child(survivor) == ok);
  q.put(43);
  CHECK(q.get() == 43);
}

TEST_CASE("a putter killed while blocked on a full queue leaves it consistent", "[queue]") {
  coproc::queue<int> q({.max_items = 1});
  q.put(1);
  pid_t victim = fork_child([&] {
    q.put(2);
    return 1;
  });
  REQUIRE(until_blocked_in_futex(victim));
  ::kill(victim, SIGKILL);
  CHECK(wait_child(victim) == 128 + SIGKILL);
  CHECK(q.size() == 1);
  CHECK(q.get() == 1);
  CHECK_FALSE(q.try_get().has_value());
  q.put(3);
  CHECK(q.get() == 3);
}

TEST_CASE("a producer killed mid-put, holding the lock, leaves no half item and no wedge",
          "[queue]") {
  coproc::queue<hanger> q({.max_items = 16, .max_bytes = 4096});
  q.put({"before", false});
  latch_pipe mid;
  pid_t victim = fork_child([&] {
    hang_latch = mid.w.get();
    hang_armed = true;
    q.put({std::string(1000, 'h'), true});  // stops inside encode, lock held
    return 1;
  });
  REQUIRE(mid.wait());  // the child is inside the put, holding the producers' lock
  ::kill(victim, SIGKILL);
  CHECK(wait_child(victim) == 128 + SIGKILL);
  CHECK(q.size() == 1);
  q.put({"after", false});  // recovers the dead producer's lock
  CHECK(q.get().text == "before");
  CHECK(q.get().text == "after");
  CHECK_FALSE(q.try_get().has_value());
  // Wraps over the garbage the dead producer left.
  for (int i = 0; i < 100; ++i) {
    q.put({std::string(700, static_cast<char>('a' + i % 26)), false});
    CHECK(q.get().text == std::string(700, static_cast<char>('a' + i % 26)));
  }
}

TEST_CASE("a consumer killed mid-get, holding the lock, loses no item", "[queue]") {
  coproc::queue<hanger> q({.max_items = 16});
  q.put({"first", true});
  q.put({"second", false});
  latch_pipe mid;
  pid_t victim = fork_child([&] {
    hang_latch = mid.w.get();
    hang_armed = true;
    q.get();  // stops inside decode, lock held
    return 1;
  });
  REQUIRE(mid.wait());
  ::kill(victim, SIGKILL);
  CHECK(wait_child(victim) == 128 + SIGKILL);
  CHECK(q.get().text == "first");  // still there, delivered once
  coproc::test::run_async([&](asio::io_context&) -> asio::awaitable<void> {
    hanger h = co_await q.async_get(asio::use_awaitable);
    CHECK(h.text == "second");
  });
  CHECK(q.empty());
}

TEST_CASE("an async getter recovers the consumers' lock of a killed consumer", "[queue]") {
  coproc::queue<hanger> q({.max_items = 16});
  q.put({"first", true});
  latch_pipe mid;
  pid_t victim = fork_child([&] {
    hang_latch = mid.w.get();
    hang_armed = true;
    q.get();
    return 1;
  });
  REQUIRE(mid.wait());
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    // The lock is held by the stuck child: async_get waits on it in the loop,
    // then the kill hands it over.
    asio::post(ctx, [&] { ::kill(victim, SIGKILL); });
    hanger h = co_await q.async_get(asio::use_awaitable);
    CHECK(h.text == "first");
  });
  CHECK(wait_child(victim) == 128 + SIGKILL);
}

TEST_CASE("queues leave no fd and no /dev/shm entry behind", "[queue]") {
  std::size_t fds = count_entries("/proc/self/fd");
  std::size_t shm = count_entries("/dev/shm");
  {
    coproc::queue<std::string> a;
    coproc::queue<int> b({.max_items = 10, .max_bytes = 1 << 16});
    CHECK(count_entries("/dev/shm") == shm);
    a.put("x");
    b.put(1);
    CHECK(a.get() == "x");
    CHECK(b.get() == 1);
  }
  CHECK(count_entries("/proc/self/fd") == fds);
  CHECK(count_entries("/dev/shm") == shm);
}

TEST_CASE("bad bounds are refused", "[queue]") {
  CHECK_THROWS_AS(coproc::queue<int>({.max_items = 0}), std::invalid_argument);
  CHECK_THROWS_AS(coproc::queue<int>({.max_items = std::size_t{1} << 24}), std::invalid_argument);
  CHECK_THROWS_AS(coproc::queue<int>({.max_bytes = std::size_t{1} << 40}), std::invalid_argument);
}
