// The arenas' memory after large payloads: a pool at rest gives back what a
// payload used past pool_options::arena_keep (issue 15, "Memory given back").
// Measured as the pool's memfd's allocated blocks (fstat st_blocks), found
// through /proc/self/fd by its name.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"
#include "poll_until.hpp"

namespace {

std::vector<std::uint8_t> echo_bytes(std::vector<std::uint8_t> v) {
  return v;
}

// Bytes allocated to the pool's shared memory (every "coproc-pool" memfd
// this process holds: one per pool).
std::uint64_t pool_shared_bytes() {
  std::uint64_t bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (ec || target.string().find("memfd:coproc-pool") == std::string::npos) {
      continue;
    }
    struct stat st {};
    if (::stat(entry.path().c_str(), &st) == 0) {
      bytes += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
  }
  return bytes;
}

// Waits (on the loop, 10 ms at a time, at most 10 s) until `done()`.
template <class Done>
asio::awaitable<void> until(Done done) {
  return coproc::test::poll_until(std::move(done), std::chrono::milliseconds(10), 1000);
}

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

}  // namespace

TEST_CASE("a pool at rest gives arena pages past arena_keep back to the kernel",
          "[process_pool][memory]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // Default options: arena_keep 16 MiB, ring_bytes 1 MiB, 2 workers.
    coproc::process_pool pool(ctx.get_executor(), {.workers = 2});
    std::uint64_t before = pool_shared_bytes();
    std::vector<std::uint8_t> big(64 * MiB, 7);
    auto back = co_await pool.submit(echo_bytes, big);
    REQUIRE(back == big);
    // The worker's input arena held 64 MiB: the measure sees it. The result
    // came back through the same pages (written over the arguments), not
    // through a second 64 MiB in the output arena.
    std::uint64_t after_task = pool_shared_bytes();
    CHECK(after_task >= before + 64 * MiB);
    CHECK(after_task < before + 2 * 64 * MiB);
    // At rest: at most workers x 2 x (ring_bytes + arena_keep), plus the
    // pool's header and each slot's page of words.
    std::uint64_t bound = 2 * 2 * (1 * MiB + 16 * MiB) + 1 * MiB;
    co_await until([&] { return pool_shared_bytes() <= bound; });
    std::uint64_t rested = pool_shared_bytes();
    INFO("before " << before << ", after the task " << after_task << ", at rest " << rested);
    CHECK(rested <= bound);
    // The pages come back when a payload needs them again.
    auto again = co_await pool.submit(echo_bytes, big);
    CHECK(again == big);
  });
}

TEST_CASE("arena_keep bounds what a rested pool keeps", "[process_pool][memory]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1, .arena_keep = 1 * MiB});
    std::vector<std::uint8_t> medium(8 * MiB, 3);
    auto back = co_await pool.submit(echo_bytes, medium);
    REQUIRE(back == medium);
    std::uint64_t bound = 1 * 2 * (1 * MiB + 1 * MiB) + 1 * MiB;
    co_await until([&] { return pool_shared_bytes() <= bound; });
    CHECK(pool_shared_bytes() <= bound);
  });
}
