#include "coproc/ipc/shared_memory.hpp"

#include <fcntl.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <cstring>
#include <filesystem>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/codec.hpp"
#include "sync_test_support.hpp"

using coproc::test::fork_child;
using coproc::test::wait_child;

namespace {
std::size_t count_dev_shm() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    ++n;
  }
  return n;
}
}  // namespace

TEST_CASE("a segment is shared with a forked child and named nowhere", "[shared_memory]") {
  std::size_t before = count_dev_shm();
  {
    coproc::shared_memory seg(1 << 16);
    CHECK(seg.size() == 1 << 16);
    CHECK(seg.data()[100] == std::byte{0});
    CHECK((::fcntl(seg.fd(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(count_dev_shm() == before);
    pid_t pid = fork_child([&] {
      std::memcpy(seg.data() + 100, "child", 6);
      return 0;
    });
    CHECK(wait_child(pid) == 0);
    CHECK(std::strcmp(reinterpret_cast<const char*>(seg.data() + 100), "child") == 0);
  }
  CHECK(count_dev_shm() == before);
}

TEST_CASE("a segment handed on by its fd maps the same bytes", "[shared_memory]") {
  coproc::shared_memory seg(4096);
  pid_t pid = fork_child([&] {
    // As a process that received the fd: map it anew.
    auto mine =
        coproc::shared_memory::attach(coproc::unique_fd(::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0)));
    if (mine.size() != 4096 || mine.data() == seg.data()) {
      return 1;
    }
    std::memcpy(mine.data(), "via fd", 7);
    return 0;
  });
  CHECK(wait_child(pid) == 0);
  CHECK(std::strcmp(reinterpret_cast<const char*>(seg.data()), "via fd") == 0);
  CHECK(seg.at(4000, 96) == seg.data() + 4000);
  CHECK_THROWS_AS(seg.at(4000, 97), std::out_of_range);
}

namespace {
std::size_t write_in_task(coproc::shared_memory m) {
  std::memcpy(m.data() + 8, "from task", 10);
  return m.size();
}
}  // namespace

TEST_CASE("a segment handed to a task crosses as a handle", "[shared_memory]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    coproc::shared_memory seg(8192);
    CHECK(coproc::encoded_size(seg) < 64);
    std::size_t size = co_await pool.submit(write_in_task, seg);
    CHECK(size == 8192);
    CHECK(std::strcmp(reinterpret_cast<const char*>(seg.data() + 8), "from task") == 0);
  });
}
