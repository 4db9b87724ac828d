// Tests of the connection's receive buffer: growth keeps the bytes it holds,
// on the heap, across the switch to a mapping, and through mremap.
#include <catch2/catch_message.hpp>
#include <catch2/catch_test_macros.hpp>
#include <coproc/ipc/detail/receive_buffer.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>

namespace {

using coproc::detail::receive_buffer;

void fill(receive_buffer& b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    b.data()[i] = static_cast<std::byte>(i * 7 + i / 4096);
  }
}

bool holds(const receive_buffer& b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (b.data()[i] != static_cast<std::byte>(i * 7 + i / 4096)) {
      return false;
    }
  }
  return true;
}

// Whether `p` lies in an anonymous mapping of its own size or more (a line
// of /proc/self/maps with no path), as the mapped buffer should.
bool in_anonymous_mapping(const void* p) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0;
    std::uintptr_t hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && addr >= lo && addr < hi) {
      return line.find('/') == std::string::npos && line.find('[') == std::string::npos;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("receive_buffer keeps its bytes as it grows from the heap into a mapping",
          "[receive_buffer]") {
  receive_buffer b;
  CHECK(b.data() == nullptr);
  CHECK(b.capacity() == 0);

  b.make_room(64 << 10, 0, 0);
  REQUIRE(b.capacity() == (64 << 10));
  fill(b, 64 << 10);

  b.make_room(512 << 10, 0, 64 << 10);  // heap to heap
  CHECK(holds(b, 64 << 10));
  fill(b, 512 << 10);

  b.make_room(receive_buffer::mapped_from * 2, 0, 512 << 10);  // heap to a mapping
  CHECK(b.capacity() == receive_buffer::mapped_from * 2);
  CHECK(holds(b, 512 << 10));
  CHECK(in_anonymous_mapping(b.data()));
  fill(b, receive_buffer::mapped_from * 2);

  for (std::size_t cap = receive_buffer::mapped_from * 4; cap <= (std::size_t{64} << 20);
       cap *= 2) {
    const std::size_t kept = b.capacity();
    b.make_room(cap, 0, kept);  // mremap
    REQUIRE(b.capacity() == cap);
    CHECK(holds(b, kept));
    fill(b, cap);
  }
  CHECK(holds(b, std::size_t{64} << 20));
}

TEST_CASE("receive_buffer never shrinks on grow and gives its memory back on reset",
          "[receive_buffer]") {
  receive_buffer b;
  b.make_room(receive_buffer::mapped_from * 2, 0, 0);
  std::byte* before = b.data();
  b.make_room(4096, 0, 0);  // smaller than it is: nothing changes
  CHECK(b.data() == before);
  CHECK(b.capacity() == receive_buffer::mapped_from * 2);
  b.reset();
  CHECK(b.data() == nullptr);
  CHECK(b.capacity() == 0);
  CHECK_FALSE(in_anonymous_mapping(before));  // unmapped: nothing was mapped since
  b.make_room(4096, 0, 0);                    // usable again, on the heap
  CHECK(b.capacity() == 4096);
  fill(b, 4096);
  CHECK(holds(b, 4096));
}

TEST_CASE("receive_buffer moves the bytes it keeps to its front, whichever way it grows",
          "[receive_buffer]") {
  // The pattern byte of offset i, so that a byte moved to the wrong place shows.
  auto at = [](std::size_t i) { return static_cast<std::byte>(i * 7 + i / 4096); };
  auto moved = [&](const receive_buffer& b, std::size_t from, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      if (b.data()[i] != at(from + i)) {
        return false;
      }
    }
    return true;
  };
  receive_buffer b;
  const std::size_t big = receive_buffer::mapped_from * 2;
  const std::pair<std::size_t, const char*> steps[] = {
      {64 << 10, "no growth: compacted in place"},
      {512 << 10, "heap to heap"},
      {big, "heap to a mapping"},
      {big, "mapped, no growth: compacted in place"},
      {big * 2, "mapping grown by mremap"},
  };
  b.make_room(64 << 10, 0, 0);
  for (const auto& [capacity, how] : steps) {
    INFO(how);
    fill(b, b.capacity());
    const std::size_t from = 1000;
    const std::size_t count = b.capacity() / 2;
    b.make_room(capacity, from, count);
    CHECK(b.capacity() == capacity);
    CHECK(moved(b, from, count));
  }
}
