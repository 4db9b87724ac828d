// Tests of futex_doorbell: a loop on the epoll backend waits for a futex word
// on the doorbell's eventfd, without a watcher thread; every process that
// watches the doorbell sees each ring; a ring that comes before the wait
// shows as the changed word; cancellation stops listening.

#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <climits>
#include <coproc/runtime/detail/futex.hpp>
#include <coproc/runtime/futex_doorbell.hpp>
#include <coproc/runtime/futex_waiter.hpp>
#include <coproc/runtime/mapped_region.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <new>
#include <string>
#include <thread>

#include "async_test.hpp"

namespace {

// The word and its listener count, in memory shared with forked children.
struct shared_word {
  std::atomic<std::uint32_t> word{0};
  std::atomic<std::uint32_t> listeners{0};
};

shared_word& shared_in(coproc::mapped_region& region) {
  return *::new (region.data()) shared_word;
}

int thread_count(pid_t pid) {
  int n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  while (dirent* e = ::readdir(d)) {
    n += e->d_name[0] != '.';
  }
  ::closedir(d);
  return n;
}

// What a waker does: change the word, wake blocked threads, ring loops.
void bump_and_ring(shared_word& s, const coproc::futex_doorbell& bell) {
  s.word.fetch_add(1, std::memory_order_seq_cst);
  coproc::detail::futex_wake(s.word, INT_MAX);
  bell.ring(s.listeners);
}

bool wait_until(const std::atomic<std::uint32_t>& a, std::uint32_t v) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (a.load() != v) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

int exit_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// In a forked child: one loop on the epoll backend waits for the word to
// leave 0. Exit 0 when woken, 3 when not woken within 10 s.
[[noreturn]] void child_waits(shared_word& s, const coproc::futex_doorbell& bell) {
  asio::io_context ctx;
  coproc::uring_service::install(ctx, {.backend = coproc::io_backend::epoll});
  bool woken = false;
  auto wait_for_change = [&]() -> asio::awaitable<void> {
    while (s.word.load() == 0) {
      co_await coproc::async_futex_wait(ctx.get_executor(), s.word, 0, bell, s.listeners,
                                        asio::use_awaitable);
    }
    woken = true;
  };
  asio::co_spawn(ctx, wait_for_change(), asio::detached);
  ctx.run_for(std::chrono::seconds(10));
  ::_exit(woken ? 0 : 3);
}

}  // namespace

TEST_CASE("a doorbell wait on the epoll backend needs no watcher thread", "[futex_doorbell]") {
  auto region = coproc::mapped_region::create(4096);
  shared_word& s = shared_in(region);
  coproc::futex_doorbell bell;
  const pid_t parent = ::getpid();
  pid_t waker = ::fork();
  if (waker == 0) {
    // Counts the waiting parent's threads, then wakes it; exits with the count.
    if (!wait_until(s.listeners, 1)) {
      ::_exit(100);
    }
    int threads = thread_count(parent);
    bump_and_ring(s, bell);
    ::_exit(threads);
  }
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::uring_service::install(ctx, {.backend = coproc::io_backend::epoll});
    co_await coproc::async_futex_wait(ctx.get_executor(), s.word, 0, bell, s.listeners,
                                      asio::use_awaitable);
  });
  CHECK(exit_code(waker) == 1);  // the parent's threads while it waited
  CHECK(s.word.load() == 1);
  CHECK(s.listeners.load() == 0);
}

TEST_CASE("every loop watching one doorbell wakes on one ring", "[futex_doorbell]") {
  auto region = coproc::mapped_region::create(4096);
  shared_word& s = shared_in(region);
  coproc::futex_doorbell bell;
  pid_t a = ::fork();
  if (a == 0) {
    child_waits(s, bell);
  }
  pid_t b = ::fork();
  if (b == 0) {
    child_waits(s, bell);
  }
  // Both loops listen; one ring must wake both (the eventfd is never read,
  // so neither can take the ring from the other).
  REQUIRE(wait_until(s.listeners, 2));
  bump_and_ring(s, bell);
  CHECK(exit_code(a) == 0);
  CHECK(exit_code(b) == 0);
  CHECK(s.listeners.load() == 0);
}

TEST_CASE("a word that changed before the wait completes it at once", "[futex_doorbell]") {
  auto region = coproc::mapped_region::create(4096);
  shared_word& s = shared_in(region);
  coproc::futex_doorbell bell;
  s.word.store(5);
  coproc::test::run_async(
      [&](asio::io_context& ctx) -> asio::awaitable<void> {
        coproc::uring_service::install(ctx, {.backend = coproc::io_backend::epoll});
        // Expects 4: the ring for 4 -> 5 came before anyone listened.
        co_await coproc::async_futex_wait(ctx.get_executor(), s.word, 4, bell, s.listeners,
                                          asio::use_awaitable);
      },
      std::chrono::seconds(5));
  CHECK(s.listeners.load() == 0);
}

TEST_CASE("a cancelled doorbell wait is aborted and stops listening", "[futex_doorbell]") {
  auto region = coproc::mapped_region::create(4096);
  shared_word& s = shared_in(region);
  coproc::futex_doorbell bell;
  std::error_code result;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::uring_service::install(ctx, {.backend = coproc::io_backend::epoll});
    asio::cancellation_signal cancel;
    asio::steady_timer later(ctx, std::chrono::milliseconds(20));
    later.async_wait([&](std::error_code) { cancel.emit(asio::cancellation_type::terminal); });
    auto [ec] = co_await coproc::async_futex_wait(
        ctx.get_executor(), s.word, 0, bell, s.listeners,
        asio::bind_cancellation_slot(cancel.slot(),
                                     asio::experimental::as_tuple(asio::use_awaitable)));
    result = ec;
  });
  CHECK(result == asio::error::operation_aborted);
  CHECK(s.listeners.load() == 0);
  // A later ring finds no listener and writes nothing.
  bump_and_ring(s, bell);
}
