// The copies a plain std::vector payload takes (issue 15, "Copies that
// remain"): a moved-in argument is encoded from the caller's own object, a
// large result is written back into the input arena its arguments came
// through, and a block-copied result of an argument's type is decoded into
// that argument's storage. Values arrive intact at every size around the
// inline limit, empty, odd, growing and shrinking, and after encodings that
// throw half-way.
#include <algorithm>
#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <cereal/types/vector.hpp>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/process_pool.hpp"

namespace {

/// Counts the copies made of it in this process; crosses through cereal.
struct counted {
  static inline int copies = 0;
  std::vector<std::uint8_t> bytes;

  counted() = default;
  explicit counted(std::size_t n) : bytes(n, 5) {}
  counted(const counted& other) : bytes(other.bytes) { ++copies; }
  counted(counted&&) noexcept = default;
  counted& operator=(const counted& other) {
    bytes = other.bytes;
    ++copies;
    return *this;
  }
  counted& operator=(counted&&) noexcept = default;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(bytes);
  }
};

std::size_t counted_size(counted c) {
  return c.bytes.size();
}

std::vector<std::uint8_t> echo_bytes(std::vector<std::uint8_t> v) {
  return v;
}
std::vector<double> echo_doubles(std::vector<double> v) {
  return v;
}
std::vector<double> twice_as_long(std::vector<double> v) {
  v.insert(v.end(), v.begin(), v.end());
  return v;
}
std::vector<double> first_half(std::vector<double> v) {
  v.resize(v.size() / 2);
  return v;
}
std::vector<double> make_doubles(std::size_t n) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = static_cast<double>(i) * 0.5;
  }
  return v;
}

/// A result whose cereal save() throws while it is written, after it was
/// sized (the worker sizes it first): large enough for an arena.
struct unsavable {
  std::vector<char> filler;
  mutable int calls = 0;

  template <class Archive>
  void save(Archive& ar) const {
    if (++calls == 2) {
      throw std::runtime_error("cannot save this result");
    }
    ar(filler);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(filler);
  }
};
unsavable unsavable_from(std::vector<double> v) {
  return unsavable{std::vector<char>(v.size() * sizeof(double), 'x'), 0};
}

std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t seed) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = static_cast<std::uint8_t>(i * 31 + seed);
  }
  return v;
}

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

}  // namespace

TEST_CASE("a moved-in argument is encoded from the caller's object, an lvalue copied once",
          "[process_pool][payload]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    counted::copies = 0;
    std::size_t n = co_await pool.submit(counted_size, counted(3 * MiB));
    CHECK(n == 3 * MiB);
    CHECK(counted::copies == 0);
    counted kept(100 * KiB);
    n = co_await pool.submit(counted_size, kept);
    CHECK(n == 100 * KiB);
    CHECK(counted::copies == 1);  // into the task: the caller keeps its own
    CHECK(kept.bytes.size() == 100 * KiB);
  });
}

TEST_CASE("a block-copied result comes back in the storage of the argument it replaces",
          "[process_pool][payload]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    for (std::size_t n : {std::size_t{1}, std::size_t{1000}, 3 * MiB + 7}) {
      std::vector<double> v = make_doubles(n);
      const double* storage = v.data();
      std::vector<double> back = co_await pool.submit(echo_doubles, std::move(v));
      CHECK(back == make_doubles(n));
      CHECK(back.data() == storage);
    }
    // Longer than the argument's capacity: new storage, values intact.
    std::vector<double> grown = co_await pool.submit(twice_as_long, make_doubles(300 * KiB));
    REQUIRE(grown.size() == 600 * KiB);
    CHECK(std::equal(grown.begin(), grown.begin() + 300 * KiB, make_doubles(300 * KiB).begin()));
    CHECK(std::equal(grown.begin() + 300 * KiB, grown.end(), make_doubles(300 * KiB).begin()));
    std::vector<double> shrunk = co_await pool.submit(first_half, make_doubles(2 * MiB + 1));
    CHECK(shrunk == make_doubles(MiB));
    std::vector<double> empty = co_await pool.submit(echo_doubles, std::vector<double>{});
    CHECK(empty.empty());
  });
}

TEST_CASE("payloads around the inline limit arrive intact both ways", "[process_pool][payload]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    // The 64 KiB limit counts the frame's header and the body's own prefixes
    // (the callable's code offset, the element count): step over it.
    for (std::size_t n = 64 * KiB - 80; n <= 64 * KiB + 40; n += 3) {
      std::vector<std::uint8_t> v = pattern(n, static_cast<std::uint8_t>(n));
      std::vector<std::uint8_t> back = co_await pool.submit(echo_bytes, v);
      REQUIRE(back == v);
    }
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, 4095 * KiB + 3, 17 * MiB + 1}) {
      std::vector<std::uint8_t> v = pattern(n, 9);
      std::vector<std::uint8_t> back = co_await pool.submit(echo_bytes, v);
      REQUIRE(back == v);
    }
    // A small argument with a large result (the output arena), and the
    // other way round.
    std::vector<double> made = co_await pool.submit(make_doubles, std::size_t{MiB + 3});
    CHECK(made == make_doubles(MiB + 3));
    std::vector<double> half = co_await pool.submit(first_half, make_doubles(20 * KiB + 2));
    CHECK(half == make_doubles(10 * KiB + 1));
  });
}

TEST_CASE("large round trips in flight together to one worker arrive intact",
          "[process_pool][payload]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    // One task per item, all sent at once: each task's arguments hold the
    // input arena until its result is read, so the others wait for it and
    // none is overwritten.
    std::vector<std::vector<std::uint8_t>> in;
    for (std::size_t i = 0; i < 6; ++i) {
      in.push_back(pattern(MiB + i * 4097, static_cast<std::uint8_t>(i)));
    }
    std::vector<std::vector<std::uint8_t>> out = co_await pool.map(echo_bytes, in, 1);
    CHECK(out == in);
  });
}

TEST_CASE("a result that throws while written over its arguments leaves the arena usable",
          "[process_pool][payload]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    for (int round = 0; round < 2; ++round) {
      bool threw = false;
      try {
        co_await pool.submit(unsavable_from, make_doubles(MiB));
      } catch (const std::exception& e) {
        threw = std::string(e.what()).find("cannot save this result") != std::string::npos;
      }
      CHECK(threw);
      std::vector<double> back = co_await pool.submit(echo_doubles, make_doubles(2 * MiB + 5));
      CHECK(back == make_doubles(2 * MiB + 5));
    }
  });
}
