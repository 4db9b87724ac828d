// Tests of detail::sleep_flag, coproc's one sleep/wake handshake: two sides
// pass a ball back and forth and always sleep on a futex when it is not
// their turn, so each round trip goes through announce, re-check, take and
// futex wake. A wake-up the handshake loses shows as a sleep that timed out
// while the ball was already there; the game then stops and the test fails
// (it does not hang). Between threads, between processes, and with several
// sleepers on one shared word.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <cerrno>
#include <climits>
#include <coproc/runtime/detail/futex.hpp>
#include <coproc/runtime/detail/sleep_flag.hpp>
#include <coproc/runtime/mapped_region.hpp>
#include <cstdint>
#include <ctime>
#include <new>
#include <thread>
#include <vector>

namespace {

using coproc::detail::sleep_flag;

// A lost wake-up is a sleep that lasts this long with the ball already there.
constexpr timespec lost_after{1, 0};

// In memory shared by both players (threads, or processes after fork).
struct table {
  alignas(64) std::atomic<std::uint64_t> ball{0};  // even: side 0 plays, odd: side 1
  alignas(64) std::atomic<std::uint32_t> lost{0};  // wake-ups lost so far (stops the game)
  alignas(64) std::atomic<std::uint32_t> bell[2] = {};
};

void relax(std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

// Plays `rounds` turns as `side`. Before each announcement it spins a
// little, a different time each round, so the other side's pass lands
// anywhere around the announce / re-check / wait window.
void play(table& t, int side, std::uint64_t rounds) {
  auto my_turn = [&](std::uint64_t turn) { return t.ball.load(std::memory_order_acquire) == turn; };
  for (std::uint64_t r = 0; r < rounds; ++r) {
    const std::uint64_t turn = 2 * r + static_cast<std::uint64_t>(side);
    while (!my_turn(turn)) {
      if (t.lost.load(std::memory_order_relaxed) != 0) {
        return;
      }
      relax(r % 97);  // the other side's pass may land here, before the announcement
      sleep_flag bell(t.bell[side]);
      const std::uint32_t seen = bell.announce();
      if (my_turn(turn)) {
        bell.cancel();
        break;
      }
      int err = coproc::detail::futex_wait(t.bell[side], seen, &lost_after);
      bell.cancel();
      if (err == ETIMEDOUT && my_turn(turn)) {
        t.lost.fetch_add(1, std::memory_order_relaxed);
        coproc::detail::futex_wake(t.bell[1 - side]);
        return;
      }
    }
    t.ball.store(turn + 1, std::memory_order_release);
    if (sleep_flag(t.bell[1 - side]).take()) {
      coproc::detail::futex_wake(t.bell[1 - side]);
    }
  }
}

constexpr std::uint64_t rounds = 20'000;

}  // namespace

TEST_CASE("two threads pass a ball through sleep and wake without losing one", "[sleep_flag]") {
  table t;
  std::thread other([&] { play(t, 1, rounds); });
  play(t, 0, rounds);
  other.join();
  CHECK(t.lost.load() == 0);
  CHECK(t.ball.load() == 2 * rounds);
}

TEST_CASE("two processes pass a ball through sleep and wake without losing one", "[sleep_flag]") {
  auto region = coproc::mapped_region::create(sizeof(table));
  table& t = *::new (region.data()) table;
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    play(t, 1, rounds);
    ::_exit(0);
  }
  play(t, 0, rounds);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(t.lost.load() == 0);
  CHECK(t.ball.load() == 2 * rounds);
}

TEST_CASE("several sleepers on one shared word all wake at every ring", "[sleep_flag]") {
  // A generation counter that sleepers wait to see move; each acknowledges,
  // and the waker moves it again only once all did. A ring that a sleeper
  // misses (a flag lowered under it, a futex value seen twice) is a lost
  // wake-up.
  constexpr int sleepers = 3;
  constexpr std::uint32_t generations = 5'000;
  std::atomic<std::uint32_t> generation{0};
  std::atomic<std::uint32_t> acks{0};
  std::atomic<std::uint32_t> lost{0};
  std::atomic<std::uint32_t> bell{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < sleepers; ++i) {
    threads.emplace_back([&, i] {
      for (std::uint32_t g = 1; g <= generations; ++g) {
        while (generation.load(std::memory_order_acquire) < g && lost.load() == 0) {
          relax((g * 7 + static_cast<std::uint32_t>(i) * 13) % 89);
          sleep_flag flag(bell);
          const std::uint32_t seen = flag.announce_shared();
          if (generation.load(std::memory_order_acquire) >= g) {
            break;
          }
          int err = coproc::detail::futex_wait(bell, seen, &lost_after);
          if (err == ETIMEDOUT && generation.load(std::memory_order_acquire) >= g) {
            lost.fetch_add(1);
          }
        }
        acks.fetch_add(1, std::memory_order_acq_rel);
      }
    });
  }
  for (std::uint32_t g = 1; g <= generations && lost.load() == 0; ++g) {
    while (acks.load(std::memory_order_acquire) < (g - 1) * sleepers && lost.load() == 0) {
      std::this_thread::yield();
    }
    generation.store(g, std::memory_order_release);
    if (sleep_flag(bell).take()) {
      coproc::detail::futex_wake(bell, INT_MAX);
    }
  }
  if (lost.load() != 0) {
    generation.store(generations, std::memory_order_release);
    sleep_flag(bell).force();
    coproc::detail::futex_wake(bell, INT_MAX);
  }
  for (auto& th : threads) {
    th.join();
  }
  CHECK(lost.load() == 0);
  CHECK(acks.load() == generations * sleepers);
}

TEST_CASE("a count word rings while any sleeper joined", "[sleep_flag]") {
  std::atomic<std::uint32_t> listeners{0};
  sleep_flag count(listeners);
  CHECK_FALSE(sleep_flag::joined(listeners));
  count.join();
  count.join();
  CHECK(sleep_flag::joined(listeners));
  count.leave();
  CHECK(sleep_flag::joined(listeners));
  count.leave();
  CHECK_FALSE(sleep_flag::joined(listeners));
}

TEST_CASE("a flag no ring took is cancelled, and a ring takes it once", "[sleep_flag]") {
  std::atomic<std::uint32_t> word{0};
  sleep_flag flag(word);
  CHECK_FALSE(flag.take());  // nobody sleeps: no ring
  const std::uint32_t seen = flag.announce();
  CHECK((seen & 1) == 1);
  CHECK(flag.take());          // the first waker rings...
  CHECK_FALSE(flag.take());    // ...the next does not
  CHECK(word.load() != seen);  // a futex wait on `seen` ends at once
  flag.announce();
  flag.cancel();
  CHECK_FALSE(flag.take());
}
