#include "coproc/ipc/codec.hpp"

#include <catch2/catch_test_macros.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

// The largest single allocation made while `tracking` is set: lets a test prove that a
// corrupt length prefix is refused before anything is allocated for it. Sanitizer builds
// keep their own operator new (they check it), and rely on the bad_alloc/abort that a
// count-sized allocation of 2^62 elements would cause.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define COPROC_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COPROC_TEST_SANITIZED 1
#endif

namespace {
std::atomic<bool> tracking{false};
std::atomic<std::size_t> largest_allocation{0};
}  // namespace

#ifndef COPROC_TEST_SANITIZED
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (tracking.load(std::memory_order_relaxed)) {
    std::size_t seen = largest_allocation.load(std::memory_order_relaxed);
    while (n > seen && !largest_allocation.compare_exchange_weak(seen, n)) {
    }
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) {
    return p;
  }
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
#pragma GCC diagnostic pop
#endif

namespace {

using bytes = std::vector<std::byte>;

enum class color : std::uint16_t { red = 1, green = 2 };

struct point {
  int x;
  double y;
  bool operator==(const point&) const = default;
};

// A user type through a cereal serialize member.
struct person {
  std::string name;
  std::vector<int> scores;
  std::optional<std::map<std::string, double>> extra;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, scores, extra);
  }
  bool operator==(const person&) const = default;
};

// Through free save/load functions, holding another cereal type and a bool.
struct team {
  std::vector<person> members;
  bool active = false;
  std::variant<int, std::string> tag;
  bool operator==(const team&) const = default;
};
template <class Archive>
void save(Archive& ar, const team& t) {
  ar(t.members, t.active, t.tag);
}
template <class Archive>
void load(Archive& ar, team& t) {
  ar(t.members, t.active, t.tag);
}

// Trivially copyable, but it asked for serialize(): that is what runs.
struct counted {
  int value;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value);
  }
  bool operator==(const counted&) const = default;
};

// A private default constructor, reached through coproc::codec_access.
class sealed {
 public:
  explicit sealed(int v) : v_(v) {}
  int value() const { return v_; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(v_);
  }

 private:
  friend struct coproc::codec_access;
  sealed() = default;
  int v_ = 0;
};

template <class T>
T round_trip(const T& value) {
  const bytes frame = coproc::encode_to_vector(value);
  CHECK(frame.size() == coproc::encoded_size(value));
  return coproc::decode_from<T>(frame);
}

template <class T>
void check_round_trip(const T& value) {
  CHECK(round_trip(value) == value);
}

bool is_corrupt(const std::system_error& e) {
  return e.code() == coproc::errc::frame_corrupt;
}

template <class T>
void expect_corrupt(const bytes& frame) {
  try {
    (void)coproc::decode_from<T>(frame);
    FAIL("decode accepted a corrupt frame");
  } catch (const std::system_error& e) {
    CHECK(is_corrupt(e));
  }
}

template <class T>
bytes raw_bytes(const T& v) {
  bytes out(sizeof(T));
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

using nested = std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>;

nested make_nested() {
  return {{"alpha", {std::pair{1, std::string("one")}, std::nullopt, std::pair{-3, std::string()}}},
          {"", {}},
          {"gamma", {std::nullopt}}};
}

// One frame that holds every kind of wire shape, for the truncation and flip tests.
using everything = std::tuple<nested, std::vector<double>, std::vector<bool>, person, team,
                              std::variant<std::monostate, int, std::string>, std::set<int>,
                              std::unordered_map<int, std::string>, std::array<std::string, 2>,
                              std::chrono::milliseconds, color, bool, std::optional<point>>;

everything make_everything() {
  return {make_nested(),
          {1.5, -2.25, 3.0},
          {true, false, true, true, false, false, true, false, true},
          person{"ada", {1, 2, 3}, std::map<std::string, double>{{"x", 1.0}}},
          team{{person{"bob", {}, std::nullopt}}, true, std::string("blue")},
          std::string("variant"),
          {5, 1, 9},
          {{1, "one"}, {2, "two"}},
          {"left", "right"},
          std::chrono::milliseconds(42),
          color::green,
          true,
          point{7, 0.5}};
}

}  // namespace

TEST_CASE("scalars, enums, bools and durations round trip", "[codec]") {
  check_round_trip(42);
  check_round_trip(-7LL);
  check_round_trip(3.25);
  check_round_trip('z');
  check_round_trip(std::uint8_t{255});
  check_round_trip(color::green);
  check_round_trip(true);
  check_round_trip(false);
  check_round_trip(std::chrono::nanoseconds(123456789));
  check_round_trip(std::chrono::duration<double>(1.5));
  check_round_trip(point{1, 2.5});
  check_round_trip(std::monostate{});
  CHECK(coproc::encoded_size(true) == 1);
  CHECK(coproc::encoded_size(point{}) == sizeof(point));
  CHECK(coproc::encoded_size(std::monostate{}) == 0);
}

TEST_CASE("strings and vectors round trip", "[codec]") {
  check_round_trip(std::string());
  check_round_trip(std::string("hello, world"));
  check_round_trip(std::string(100000, 'x'));
  check_round_trip(std::u16string(u"wide"));
  check_round_trip(std::u32string(U"wider"));
  check_round_trip(std::vector<double>{});
  check_round_trip(std::vector<double>{1.0, 2.0, 3.0});
  check_round_trip(std::vector<point>{{1, 1.0}, {2, 2.0}});
  check_round_trip(std::vector<std::string>{"a", "", "ccc"});
  check_round_trip(std::vector<std::vector<int>>{{1}, {}, {2, 3}});
  for (std::size_t n : {0, 1, 7, 8, 9, 1000}) {
    std::vector<bool> v(n);
    for (std::size_t i = 0; i < n; ++i) {
      v[i] = (i * 7) % 3 == 0;
    }
    check_round_trip(v);
    CHECK(coproc::encoded_size(v) == 8 + (n + 7) / 8);
  }
  // A block is length + bytes, nothing else.
  CHECK(coproc::encoded_size(std::vector<double>(10)) == 8 + 80);
  CHECK(coproc::encoded_size(std::string("abc")) == 8 + 3);
}

TEST_CASE("arrays, optionals, variants, tuples and pairs round trip", "[codec]") {
  check_round_trip(std::array<int, 4>{1, 2, 3, 4});
  check_round_trip(std::array<std::string, 2>{"x", "y"});
  check_round_trip(std::array<bool, 3>{true, false, true});
  check_round_trip(std::array<std::optional<int>, 2>{std::nullopt, 5});
  check_round_trip(std::optional<int>{});
  check_round_trip(std::optional<int>{9});
  check_round_trip(std::optional<std::string>{"s"});
  using var = std::variant<std::monostate, int, std::string, std::vector<double>>;
  check_round_trip(var{});
  check_round_trip(var{3});
  check_round_trip(var{std::string("text")});
  check_round_trip(var{std::vector<double>{1.0}});
  check_round_trip(std::tuple<int, std::string, double>{1, "two", 3.0});
  check_round_trip(std::tuple<>{});
  check_round_trip(std::pair<std::string, std::vector<int>>{"k", {1, 2}});
}

TEST_CASE("associative containers round trip", "[codec]") {
  check_round_trip(std::map<int, std::string>{{1, "a"}, {2, "b"}});
  check_round_trip(std::map<std::string, std::map<int, bool>>{{"x", {{1, true}}}, {"y", {}}});
  check_round_trip(std::unordered_map<std::string, int>{{"a", 1}, {"b", 2}, {"c", 3}});
  check_round_trip(std::set<std::string>{"b", "a"});
  check_round_trip(std::unordered_set<int>{4, 5, 6});
}

TEST_CASE("nested standard types round trip", "[codec]") {
  check_round_trip(make_nested());
  check_round_trip(make_everything());
}

TEST_CASE("cereal user types round trip", "[codec]") {
  check_round_trip(person{"ada", {1, 2, 3}, std::nullopt});
  check_round_trip(person{"", {}, std::map<std::string, double>{{"pi", 3.14}}});
  check_round_trip(team{{person{"a", {1}, std::nullopt}, person{"b", {}, std::nullopt}}, true, 7});
  check_round_trip(std::vector<person>{person{"x", {}, std::nullopt}});
  check_round_trip(std::optional<team>{team{}});
  CHECK(round_trip(sealed(5)).value() == 5);
  // serialize() wins over the block copy: the frame is a cereal blob (u64 length + int).
  check_round_trip(counted{11});
  CHECK(coproc::encoded_size(counted{11}) == 8 + sizeof(int));
}

TEST_CASE("a decoder reads several values in order", "[codec]") {
  const auto v = std::vector<int>{1, 2};
  const bytes frame = coproc::encode_to_vector(7, std::string("s"), v, true, person{"p", {}, {}});
  CHECK(frame.size() == coproc::encoded_size(7, std::string("s"), v, true, person{"p", {}, {}}));
  coproc::decoder d(frame);
  CHECK(d.decode<int>() == 7);
  CHECK(d.decode<std::string>() == "s");
  CHECK(d.decode<std::vector<int>>() == v);
  CHECK(d.decode<bool>());
  CHECK(d.decode<person>().name == "p");
  CHECK(d.remaining() == 0);
}

TEST_CASE("encode reports the bytes written and refuses a short buffer", "[codec]") {
  const std::string s = "abcdef";
  bytes out(coproc::encoded_size(s, 5));
  CHECK(coproc::encode(std::span<std::byte>(out), s, 5) == out.size());
  bytes small(out.size() - 1);
  try {
    coproc::encode(std::span<std::byte>(small), s, 5);
    FAIL("encode wrote past the buffer");
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::frame_too_large);
  }
}

TEST_CASE("a block of trivially copyable elements decodes from misaligned bytes", "[codec]") {
  std::vector<double> v(1000);
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = static_cast<double>(i) * 0.5;
  }
  // The bool puts the vector's data at offset 9: not aligned for double.
  const bytes frame = coproc::encode_to_vector(true, v);
  coproc::decoder d(frame);
  CHECK(d.decode<bool>());
  CHECK(d.decode<std::vector<double>>() == v);
}

TEST_CASE("variant index out of range is frame_corrupt", "[codec]") {
  using var = std::variant<int, std::string>;
  expect_corrupt<var>(concat({raw_bytes(std::uint32_t{2}), raw_bytes(0)}));
  expect_corrupt<var>(concat({raw_bytes(std::uint32_t{0xffffffff}), raw_bytes(0)}));
  CHECK(coproc::decode_from<var>(concat({raw_bytes(std::uint32_t{0}), raw_bytes(5)})) == var{5});
}

TEST_CASE("a bool byte other than 0 or 1 is frame_corrupt", "[codec]") {
  expect_corrupt<bool>({std::byte{2}});
  expect_corrupt<bool>({std::byte{0xff}});
  expect_corrupt<std::optional<int>>(concat({{std::byte{2}}, raw_bytes(1)}));
  expect_corrupt<std::array<bool, 2>>({std::byte{1}, std::byte{3}});
  // Inside a cereal type too.
  bytes frame = coproc::encode_to_vector(team{{}, true, 1});
  // The blob length (u64), then the members count (u64 0), then the bool at offset 16.
  REQUIRE(frame[16] == std::byte{1});
  frame[16] = std::byte{2};
  expect_corrupt<team>(frame);
}

TEST_CASE("vector<bool> with nonzero padding bits is frame_corrupt", "[codec]") {
  expect_corrupt<std::vector<bool>>(concat({raw_bytes(std::uint64_t{3}), {std::byte{0x0f}}}));
  CHECK(coproc::decode_from<std::vector<bool>>(
            concat({raw_bytes(std::uint64_t{3}), {std::byte{0x05}}})) ==
        std::vector<bool>{true, false, true});
}

TEST_CASE("a repeated key in a map or set is frame_corrupt", "[codec]") {
  expect_corrupt<std::map<int, int>>(concat(
      {raw_bytes(std::uint64_t{2}), raw_bytes(1), raw_bytes(10), raw_bytes(1), raw_bytes(20)}));
  expect_corrupt<std::unordered_set<int>>(
      concat({raw_bytes(std::uint64_t{2}), raw_bytes(1), raw_bytes(1)}));
}

TEST_CASE("trailing bytes after the value are frame_corrupt", "[codec]") {
  bytes frame = coproc::encode_to_vector(5);
  frame.push_back(std::byte{0});
  expect_corrupt<int>(frame);
}

TEST_CASE("every truncation of a valid frame is frame_corrupt", "[codec]") {
  const bytes frame = coproc::encode_to_vector(make_everything());
  REQUIRE(coproc::decode_from<everything>(frame) == make_everything());
  for (std::size_t len = 0; len < frame.size(); ++len) {
    const bytes prefix(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(len));
    try {
      (void)coproc::decode_from<everything>(prefix);
      FAIL("a frame cut to " << len << " bytes decoded");
    } catch (const std::system_error& e) {
      if (!is_corrupt(e)) {
        FAIL("a frame cut to " << len << " bytes threw " << e.what());
      }
    }
  }
}

TEST_CASE("random byte flips never crash the decoder", "[codec]") {
  const bytes frame = coproc::encode_to_vector(make_everything());
  std::mt19937_64 rng(12345);
  int accepted = 0;
  int refused = 0;
  for (int round = 0; round < 20000; ++round) {
    bytes mutated = frame;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      mutated[rng() % mutated.size()] ^= static_cast<std::byte>(1U << (rng() % 8));
    }
    try {
      (void)coproc::decode_from<everything>(mutated);
      ++accepted;
    } catch (const std::system_error& e) {
      if (!is_corrupt(e)) {
        FAIL("flip round " << round << " threw " << e.what());
      }
      ++refused;
    }
  }
  CHECK(refused > 0);
  CHECK(accepted + refused == 20000);
}

TEST_CASE("a huge length prefix is frame_corrupt without allocating", "[codec]") {
  const bytes huge = raw_bytes(std::uint64_t{1} << 62);
  const bytes max = raw_bytes(~std::uint64_t{0});
  largest_allocation = 0;
  tracking = true;
  auto check_all = [](const bytes& prefix) {
    const bytes frame = concat({prefix, bytes(64, std::byte{1})});
    expect_corrupt<std::string>(frame);
    expect_corrupt<std::vector<double>>(frame);
    expect_corrupt<std::vector<std::string>>(frame);
    expect_corrupt<std::vector<bool>>(frame);
    expect_corrupt<std::map<int, std::string>>(frame);
    expect_corrupt<std::unordered_map<int, int>>(frame);
    expect_corrupt<std::set<std::string>>(frame);
    expect_corrupt<person>(frame);  // the cereal blob's own length
    // A cereal container size inside a well-formed blob.
    const bytes inner =
        concat({raw_bytes(std::uint64_t{8 + 8}), raw_bytes(std::uint64_t{0}), prefix});
    expect_corrupt<person>(inner);
  };
  check_all(huge);
  check_all(max);
  tracking = false;
  // Only small bookkeeping allocations (exception objects, strings of messages).
  CHECK(largest_allocation.load() < 4096);
}

TEST_CASE("codable accepts values and refuses what only this process can use", "[codec]") {
  STATIC_CHECK(coproc::codable<int>);
  STATIC_CHECK(coproc::codable<const std::string>);
  STATIC_CHECK(coproc::codable<nested>);
  STATIC_CHECK(coproc::codable<person>);
  STATIC_CHECK(coproc::codable<point>);
  STATIC_CHECK_FALSE(coproc::codable<int*>);
  STATIC_CHECK_FALSE(coproc::codable<const char*>);
  STATIC_CHECK_FALSE(coproc::codable<int&>);
  STATIC_CHECK_FALSE(coproc::codable<int point::*>);
  STATIC_CHECK_FALSE(coproc::codable<void (*)()>);
  STATIC_CHECK_FALSE(coproc::codable<std::span<int>>);
  STATIC_CHECK_FALSE(coproc::codable<std::string_view>);
  STATIC_CHECK_FALSE(coproc::codable<std::vector<int*>>);
  STATIC_CHECK_FALSE(coproc::codable<std::array<int*, 2>>);
  STATIC_CHECK_FALSE(coproc::codable<std::map<std::string, std::string_view>>);
  STATIC_CHECK_FALSE(coproc::codable<std::optional<std::reference_wrapper<int>>>);
  STATIC_CHECK_FALSE(coproc::codable<int[3]>);
  STATIC_CHECK_FALSE(coproc::codable<std::vector<std::monostate>>);
  STATIC_CHECK_FALSE(coproc::codable<std::map<std::monostate, std::tuple<>>>);
  STATIC_CHECK(coproc::codable<std::map<std::monostate, int>>);
  STATIC_CHECK_FALSE(coproc::codable<std::unique_ptr<int>>);
  struct no_serialize {
    std::string s;
  };
  STATIC_CHECK_FALSE(coproc::codable<no_serialize>);
}
