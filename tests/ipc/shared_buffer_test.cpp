#include "coproc/ipc/shared_buffer.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/queue.hpp"
#include "sync_test_support.hpp"

using coproc::process_pool;
using coproc::shared_buffer;

namespace {

double sum(shared_buffer<const double> b) {
  return std::accumulate(b.begin(), b.end(), 0.0);
}

void scale(shared_buffer<double> b, double k) {
  for (double& x : b) {
    x *= k;
  }
}

shared_buffer<int> make_iota(std::size_t n) {
  shared_buffer<int> b(n);
  std::iota(b.begin(), b.end(), 0);
  return b;
}

shared_buffer<double> echo(shared_buffer<double> b) {
  return b;
}

long sum_range(std::tuple<shared_buffer<const int>, std::size_t, std::size_t> item) {
  auto& [b, first, last] = item;
  long s = 0;
  for (std::size_t i = first; i < last && i < b.size(); ++i) {
    s += b[i];
  }
  return s;
}

int write_read_only(shared_buffer<const int> b) {
  const_cast<int&>(b[0]) = 7;  // the mapping is PROT_READ: this faults
  return 0;
}

int write_then_die(shared_buffer<int> b) {
  b[0] = 42;
  ::raise(SIGKILL);
  return 0;
}

int sum_ints(shared_buffer<int> b) {
  return std::accumulate(b.begin(), b.end(), 0);
}

void sum_from_queue(coproc::queue<shared_buffer<int>>& q, shared_buffer<long> out) {
  shared_buffer<int> b = q.get();
  out[0] = std::accumulate(b.begin(), b.end(), 0L);
  b[0] = -1;
}

/// Lines of /proc/PID/maps and fds of /proc/PID/fd naming a shared_buffer segment.
struct segment_counts {
  std::size_t mappings = 0;
  std::size_t fds = 0;
};

segment_counts count_segments(pid_t pid) {
  segment_counts c;
  const std::string root = "/proc/" + std::to_string(pid);
  std::ifstream maps(root + "/maps");
  for (std::string line; std::getline(maps, line);) {
    c.mappings += line.find("memfd:coproc-buffer") != std::string::npos;
  }
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(root + "/fd", ec)) {
    auto target = std::filesystem::read_symlink(e.path(), ec);
    c.fds += !ec && target.string().find("memfd:coproc-buffer") != std::string::npos;
  }
  return c;
}

std::size_t shmem_kib() {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    std::size_t kib = 0;
    meminfo >> kib;
    if (key == "Shmem:") {
      return kib;
    }
    meminfo.ignore(256, '\n');
  }
  return 0;
}

std::vector<std::string> dev_shm_names() {
  std::vector<std::string> names;
  for (auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    names.push_back(e.path().filename().string());
  }
  return names;
}

}  // namespace

TEST_CASE("a buffer is zero-filled or copied from a range, and copies share it",
          "[shared_buffer]") {
  shared_buffer<double> zeros(1000);
  CHECK(zeros.size() == 1000);
  CHECK(std::all_of(zeros.begin(), zeros.end(), [](double x) { return x == 0.0; }));
  std::vector<int> v{1, 2, 3};
  shared_buffer<int> copied(v);
  CHECK(copied.span().size() == 3);
  CHECK(copied[2] == 3);
  shared_buffer<int> alias = copied;
  alias[0] = 10;
  CHECK(copied[0] == 10);
  CHECK(alias == copied);
  shared_buffer<const int> view = copied;
  CHECK(view.data() == copied.data());
  CHECK(shared_buffer<int>(0).empty());
}

TEST_CASE("only the handle crosses, and a task's writes are seen on completion",
          "[shared_buffer]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    shared_buffer<double> b(1 << 20);
    std::iota(b.begin(), b.end(), 0.0);
    CHECK(coproc::encoded_size(b) < 64);
    const double expected = (double(1 << 20) - 1) * double(1 << 20) / 2;
    double s = co_await pool.submit(sum, shared_buffer<const double>(b));
    CHECK(s == expected);
    co_await pool.submit(scale, b, 2.0);
    CHECK(b[10] == 20.0);
    double again = co_await pool.submit(sum, shared_buffer<const double>(b));
    CHECK(again == 2 * expected);
  });
}

TEST_CASE("a task creates a buffer and returns it, or returns the one it got", "[shared_buffer]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    shared_buffer<int> made = co_await pool.submit(make_iota, std::size_t{100000});
    REQUIRE(made.size() == 100000);
    CHECK(made[99999] == 99999);
    shared_buffer<double> mine{1.0, 2.0};
    shared_buffer<double> back = co_await pool.submit(echo, mine);
    CHECK(back == mine);  // the same segment, mapped once here
    shared_buffer<int> empty = co_await pool.submit(make_iota, std::size_t{0});
    CHECK(empty.empty());
  });
}

TEST_CASE("map over a buffer's index ranges sends handles, not elements", "[shared_buffer]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 2});
    shared_buffer<int> b(40000);
    std::iota(b.begin(), b.end(), 0);
    std::vector<std::tuple<shared_buffer<const int>, std::size_t, std::size_t>> items;
    for (std::size_t i = 0; i < b.size(); i += 10000) {
      items.emplace_back(b, i, i + 10000);
    }
    CHECK(coproc::encoded_size(items) < 100 * items.size());
    std::vector<long> parts = co_await pool.map(sum_range, items);
    CHECK(std::accumulate(parts.begin(), parts.end(), 0L) == 39999L * 40000L / 2);
  });
}

TEST_CASE("a buffer goes to a process as an argument and through a queue", "[shared_buffer]") {
  coproc::queue<shared_buffer<int>> q;
  coproc::test::run_async([&q](asio::io_context& ctx) -> asio::awaitable<void> {
    shared_buffer<long> out(1);
    coproc::process proc(ctx.get_executor(), sum_from_queue, q, out);
    proc.start();
    shared_buffer<int> b(1000);
    std::fill(b.begin(), b.end(), 2);
    q.put(b);  // b stays held here until the child has it
    auto st = co_await proc.async_join(asio::use_awaitable);
    CHECK(st.success());
    CHECK(out[0] == 2000);
    CHECK(b[0] == -1);
  });
}

TEST_CASE("a read-only buffer is mapped read-only in the worker", "[shared_buffer]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    shared_buffer<int> b(16);
    bool crashed = false;
    try {
      co_await pool.submit(write_read_only, shared_buffer<const int>(b));
    } catch (const std::system_error& e) {
      crashed =
          e.code() == coproc::errc::worker_crashed &&
          std::string(e.what()).find("signal " + std::to_string(SIGSEGV)) != std::string::npos;
    }
    CHECK(crashed);
    CHECK(b[0] == 0);
  });
}

TEST_CASE("the parent drops its handle while a task still uses the buffer", "[shared_buffer]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    const auto before = count_segments(::getpid());
    std::optional<shared_buffer<double>> got;
    {
      shared_buffer<double> b(4096);
      b[4095] = 3.5;
      // The task op holds the only handle from here on.
      pool.async_submit(echo, std::move(b),
                        [&got](std::exception_ptr, shared_buffer<double> r) { got = r; });
    }
    while (!got) {
      co_await asio::post(ctx, asio::use_awaitable);
    }
    CHECK(got->size() == 4096);
    CHECK((*got)[4095] == 3.5);
    got.reset();
    const auto after = count_segments(::getpid());
    CHECK(after.mappings == before.mappings);
    CHECK(after.fds == before.fds);
  });
}

TEST_CASE("a worker that dies holding a mapping harms neither the buffer nor the next task",
          "[shared_buffer]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    process_pool pool(ctx.get_executor(), {.workers = 1});
    shared_buffer<int> b(1024);
    bool crashed = false;
    try {
      co_await pool.submit(write_then_die, b);
    } catch (const std::system_error& e) {
      crashed = e.code() == coproc::errc::worker_crashed;
    }
    CHECK(crashed);
    CHECK(b[0] == 42);  // written before the crash: the memory is the parent's too
    b[1] = 8;
    int s = co_await pool.submit(sum_ints, b);
    CHECK(s == 50);
  });
}

TEST_CASE("10,000 buffers created and dropped leave segments and Shmem at baseline",
          "[shared_buffer]") {
  coproc::test::run_async(
      [](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(), {.workers = 2});
        co_await pool.submit(sum_ints, shared_buffer<int>(1));  // workers up
        const auto names = dev_shm_names();
        const auto parent_before = count_segments(::getpid());
        const std::size_t shmem_before = shmem_kib();
        constexpr std::size_t n = 16384;  // 64 KiB each, every page touched
        for (int i = 0; i < 10000; ++i) {
          if (i % 2 == 0) {
            shared_buffer<int> b(n);
            std::fill(b.begin(), b.end(), 1);
            int s = co_await pool.submit(sum_ints, b);
            CHECK(s == static_cast<int>(n));
          } else {
            shared_buffer<int> r = co_await pool.submit(make_iota, n);
            CHECK(r[n - 1] == static_cast<int>(n - 1));
          }
        }
        const auto parent_after = count_segments(::getpid());
        CHECK(parent_after.mappings == parent_before.mappings);
        CHECK(parent_after.fds == parent_before.fds);
        // A worker keeps at most 8 segments mapped between tasks (its cache)
        // plus the one it returned last, until the parent has read it.
        for (pid_t w : pool.stats().worker_pids) {
          const auto c = count_segments(w);
          CHECK(c.mappings <= 9);
          CHECK(c.fds <= 9);
        }
        // A leak would hold 10,000 x 64 KiB = 625 MiB; workers may hold 18 x 64 KiB.
        CHECK(shmem_kib() < shmem_before + 64 * 1024);
        CHECK(dev_shm_names() == names);
      },
      std::chrono::seconds(100));
}

TEST_CASE("a forged or stale handle is refused", "[shared_buffer]") {
  shared_buffer<int> b(16);
  auto bytes = coproc::encode_to_vector(b);
  // The handle: u64 length, then pid, fd, dev, ino, bytes.
  auto forged = bytes;
  const std::size_t ino_at = 8 + 4 + 4 + 8;
  forged[ino_at] ^= std::byte{1};
  try {
    (void)coproc::decode_from<shared_buffer<int>>(forged);
    FAIL("accepted");
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::frame_corrupt);
  }
  // A handle whose sender is gone.
  auto* shared = static_cast<std::byte*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  REQUIRE(shared != MAP_FAILED);
  pid_t child = coproc::test::fork_child([shared] {
    shared_buffer<int> theirs(16);
    auto enc = coproc::encode_to_vector(theirs);
    std::memcpy(shared, enc.data(), enc.size());
    return static_cast<int>(enc.size());
  });
  const int len = coproc::test::wait_child(child);
  REQUIRE(len == static_cast<int>(bytes.size()));
  try {
    (void)coproc::decode_from<shared_buffer<int>>(
        std::span<const std::byte>(shared, static_cast<std::size_t>(len)));
    FAIL("accepted");
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::segment_unavailable);
  }
  ::munmap(shared, 4096);
}
