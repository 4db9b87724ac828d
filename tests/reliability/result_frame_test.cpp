// A worker that overwrites its result ring must not crash the parent: the
// parent decodes result frames written by another process, and "a corrupted
// or truncated frame is a clean error, never undefined behaviour"
// (DESIGN.md). Found by reading pool_core::drain while writing
// fuzz/task_frame_fuzz.cpp (drain itself is not reachable from a fuzz target).

#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "coproc/executors/detail/pool_layout.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/runtime/errc.hpp"
#include "pool_mapping.hpp"

namespace {

constexpr std::size_t ring_bytes = 64 * 1024;
constexpr std::size_t max_payload = 64 * 1024;

constexpr std::uint64_t forged_value = 0xC0FFEE;

/// Runs in the (only) worker: publishes, before its real result (1), a result
/// frame of 8 payload bytes whose first 32 bytes (a result_header, read past
/// the frame's end) claim this task's id and an inline body of 8 bytes, which
/// lie past the frame too and hold `forged_value`.
std::uint64_t forge_short_result() {
  std::byte* base = coproc::test::pool_mapping().first;
  if (base == nullptr) {
    return 3;
  }
  coproc::detail::pool_geometry g{1, ring_bytes, max_payload};
  coproc::detail::slot_channel slot = coproc::detail::slot_at(base, g, 0);
  coproc::detail::result_header h{slot.shared->running_id.load(), coproc::detail::result_value, 0,
                                  sizeof forged_value, 0};
  std::span<std::byte> frame = slot.results.try_reserve(8);
  if (frame.data() == nullptr) {
    return 4;
  }
  // Bytes past the 8 reserved ones are free ring space: the parent reads them.
  std::memcpy(frame.data(), &h, sizeof h);
  std::memcpy(frame.data() + sizeof h, &forged_value, sizeof forged_value);
  slot.results.commit(8);
  // Wake the parent now (write to every eventfd this worker holds: one is the
  // pool's doorbell; a spurious wake-up is harmless) and wait until it took
  // the frame, so the real result, written after this task returns, cannot
  // overwrite the bytes past the forged frame first.
  std::uint64_t published = slot.shared->results.head.load();
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec).string() == "anon_inode:[eventfd]") {
      std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(std::stoi(e.path().filename().string()), &one, sizeof one);
    }
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (slot.shared->results.tail.load() < published &&
         std::chrono::steady_clock::now() < deadline) {
    coproc::shm_ring::cpu_relax();
  }
  return 1;
}

}  // namespace

TEST_CASE("a result frame shorter than its header fails the task cleanly", "[reliability][fuzz]") {
  // Regression (fixed in a0af2e5, executors/src/process_pool.cpp, pool_core::drain): drain
  // memcpy()s sizeof(result_header) bytes from a frame without checking
  // frame.size() >= sizeof(result_header), and checks an inline body with
  // `h.body_size <= frame.size() - sizeof h`, which wraps around when the
  // frame is shorter than the header, so any body_size passes and the decoder
  // reads past the frame (here: it returns 8 bytes from outside the frame as
  // the task's value; with a large body it reads past the mapping). Fix: treat
  // frame.size() < sizeof(result_header) as corrupt (kill the worker, fail its
  // task with frame_corrupt) before reading the header.
  //
  // The pool lives in a forked child, so the crash cannot take the test runner.
  pid_t pid = ::fork();
  if (pid == 0) {
    int code = 9;
    asio::io_context ctx;
    {
      coproc::process_pool pool(
          ctx.get_executor(), {.workers = 1, .ring_bytes = ring_bytes, .max_payload = max_payload});
      asio::co_spawn(
          ctx,
          [&]() -> asio::awaitable<void> {
            try {
              std::uint64_t v = co_await pool.submit(forge_short_result);
              // 2: the parent took bytes from outside the frame as the result.
              code = v == forged_value ? 2 : 10 + static_cast<int>(v);
            } catch (const std::system_error& e) {
              code = e.code() == coproc::errc::frame_corrupt ? 0 : 3;
            } catch (...) {
              code = 4;
            }
          },
          asio::detached);
      ctx.run_for(std::chrono::seconds(20));
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("child status " << status
                       << (WIFSIGNALED(status)
                               ? " (killed by signal " + std::to_string(WTERMSIG(status)) + ")"
                               : " (exit " + std::to_string(WEXITSTATUS(status)) + ")"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
