// The ring's own opcodes (labelled uring_only: `./x test` leaves this file out
// of its second run, where seccomp refuses io_uring and nothing here can
// run). Where the kernel has IORING_OP_FUTEX_WAIT, a futex wait is one SQE on
// the ring and starts no watcher thread; where it has IORING_OP_WAITID, an
// exit wait uses it.

#include <dirent.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <coproc/runtime/child_process.hpp>
#include <coproc/runtime/detail/futex.hpp>
#include <coproc/runtime/futex_waiter.hpp>
#include <coproc/runtime/mapped_region.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <cstdio>
#include <new>

#include "async_test.hpp"

namespace {

int thread_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/task");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') {
      ++n;
    }
  }
  ::closedir(d);
  return n;
}

}  // namespace

TEST_CASE("a futex wait on the ring starts no watcher thread", "[uring_only]") {
  auto region = coproc::mapped_region::create(4096);
  auto& word = *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(region.data()));
  word.store(0);
  bool use_futex_wait = true;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    auto& service = coproc::uring_service::install(
        ctx, {.backend = coproc::io_backend::uring, .use_futex_wait = use_futex_wait});
    REQUIRE(service.backend() == coproc::io_backend::uring);
    if (!service.has_futex_wait()) {
      SUCCEED("this kernel has no IORING_OP_FUTEX_WAIT (6.7+): the watcher is the only path");
      co_return;
    }
    int before = thread_count();
    auto child = coproc::child_process::fork_child([&] {
      word.store(1);
      coproc::detail::futex_wake(word, 1);
    });
    while (word.load() == 0) {
      co_await coproc::async_futex_wait(ctx.get_executor(), word, 0, asio::use_awaitable);
    }
    CHECK(thread_count() == before);
    co_await child.async_wait_exit(ctx.get_executor(), asio::use_awaitable);
  });
}

TEST_CASE("the ring's probe reports WAITID and FUTEX_WAIT on a 6.7+ kernel", "[uring_only]") {
  asio::io_context ctx;
  auto& service = coproc::uring_service::install(ctx, {.backend = coproc::io_backend::uring});
  utsname u{};
  ::uname(&u);
  int major = 0;
  int minor = 0;
  std::sscanf(u.release, "%d.%d", &major, &minor);
  if (major > 6 || (major == 6 && minor >= 7)) {
    CHECK(service.has_waitid());
    CHECK(service.has_futex_wait());
  } else {
    SUCCEED("kernel " << u.release << " predates WAITID and FUTEX_WAIT");
  }
}
