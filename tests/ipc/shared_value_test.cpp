#include "coproc/ipc/shared_value.hpp"

#include <catch2/catch_test_macros.hpp>
#include <mutex>

#include "coproc/ipc/shared_array.hpp"
#include "sync_test_support.hpp"

using coproc::test::fork_child;
using coproc::test::wait_child;

namespace {
struct point {
  double x, y;
};
}  // namespace

TEST_CASE("a shared_value is updated by two children without losing increments", "[shared_value]") {
  coproc::shared_value<long> v(0);
  auto work = [&] {
    for (int i = 0; i < 10'000; ++i) {
      v.update([](long& x) { ++x; });
    }
    return 0;
  };
  pid_t a = fork_child(work);
  pid_t b = fork_child(work);
  CHECK(wait_child(a) == 0);
  CHECK(wait_child(b) == 0);
  CHECK(v.load() == 20'000);
  {
    std::lock_guard g(v.get_lock());
    v.get_obj() += 1;
  }
  CHECK(v.load() == 20'001);
}

TEST_CASE("a struct value and a no_lock value cross fork", "[shared_value]") {
  coproc::shared_value<point> p({1.0, 2.0});
  coproc::shared_value<int, coproc::no_lock> raw(7);
  coproc::shared_value<int, coproc::recursive_lock> rec(1);
  pid_t pid = fork_child([&] {
    p.store({3.0, 4.0});
    raw.store(raw.load() + 1);
    std::lock_guard g(rec.get_lock());
    rec.store(rec.load() + 1);  // re-enters the held recursive lock
    return 0;
  });
  CHECK(wait_child(pid) == 0);
  CHECK(p.load().x == 3.0);
  CHECK(p.load().y == 4.0);
  CHECK(raw.load() == 8);
  CHECK(rec.load() == 2);
}

TEST_CASE("a shared_array is written by a child and read by the parent", "[shared_value]") {
  coproc::shared_array<int> arr(16);
  CHECK(arr.size() == 16);
  CHECK(arr.load(3) == 0);
  pid_t pid = fork_child([&] {
    arr.update([](std::span<int> s) {
      for (std::size_t i = 0; i < s.size(); ++i) {
        s[i] = static_cast<int>(i * i);
      }
    });
    return 0;
  });
  CHECK(wait_child(pid) == 0);
  auto snap = arr.snapshot();
  CHECK(snap[15] == 225);
  arr.store(0, -1);
  CHECK(arr.load(0) == -1);
  CHECK_THROWS_AS(arr.load(16), std::out_of_range);
  std::vector<double> init{1.5, 2.5};
  coproc::shared_array<double, coproc::no_lock> d{std::span<const double>(init)};
  CHECK(d[1] == 2.5);
}
