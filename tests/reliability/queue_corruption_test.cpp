// Regression tests for what fuzz/queue_fuzz found: coproc::queue<T> trusted
// the shared memory another process writes (cursors, length words, the ring
// size word) too far. A broken or hostile peer could make a consumer read
// past the ring, move tail past head (the queue then looks full for ever and
// its item count wraps), or make a producer write past the ring or wait for
// room for ever. Fix (ipc/include/coproc/ipc/queue.hpp: get_locked,
// put_locked, cursors_sane, cap_): every frame must lie inside the ring and
// the published bytes, cursors on their 8-byte grid at most one ring apart,
// the ring size is this process's copy - else errc::frame_corrupt, nothing
// moved. Each test plays the peer through a second mapping of the queue's
// memfd (fuzz/memfd_alias.hpp).

#include <catch2/catch_test_macros.hpp>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>

#include "../../fuzz/memfd_alias.hpp"
#include "coproc/ipc/queue.hpp"
#include "coproc/runtime/errc.hpp"

namespace {

constexpr std::size_t ring = 4096;

/// A queue and what a peer process sees of it.
struct shared_queue {
  int fd = coproc::fuzz::next_free_fd();
  coproc::queue<std::string> q{{.max_items = 100, .max_bytes = ring}};
  coproc::fuzz::memfd_alias peer{fd, "coproc-queue", sizeof(coproc::detail::queue_state) + ring};

  coproc::detail::queue_state& state() {
    return *reinterpret_cast<coproc::detail::queue_state*>(peer.data());
  }
  std::byte* data() { return peer.data() + sizeof(coproc::detail::queue_state); }
  void length_at(std::size_t pos, std::uint64_t len) {
    std::memcpy(data() + pos, &len, sizeof len);
  }
};

bool get_is_corrupt(coproc::queue<std::string>& q) {
  try {
    (void)q.try_get();
  } catch (const std::system_error& e) {
    return e.code() == coproc::errc::frame_corrupt;
  }
  return false;
}

bool put_is_corrupt(coproc::queue<std::string>& q) {
  try {
    (void)q.try_put("x");
  } catch (const std::system_error& e) {
    return e.code() == coproc::errc::frame_corrupt;
  }
  return false;
}

}  // namespace

TEST_CASE("queue: a length word longer than the published bytes is corrupt, tail stays",
          "[reliability][fuzz]") {
  // Was: the consumer decoded 512 bytes of a 16-byte item (the rest never
  // published), failed, dropped "the item" and set tail 512 bytes past head.
  auto sq = std::make_unique<shared_queue>();
  sq->q.put("hello");
  const std::uint64_t tail = sq->state().tail.load();
  sq->length_at(0, 512);
  CHECK(get_is_corrupt(sq->q));
  CHECK(sq->state().tail.load() == tail);
  CHECK(sq->q.size() == 1);
}

TEST_CASE("queue: a wrap marker with no frame after it is corrupt", "[reliability][fuzz]") {
  // Was: tail jumped to the ring's start (past head) and the consumer decoded
  // bytes nobody published there.
  auto sq = std::make_unique<shared_queue>();
  const std::uint64_t at = ring - 8;
  sq->state().tail.store(at);
  sq->state().head.store(coproc::detail::cursor_advance(at, 8, 1));
  sq->length_at(at, coproc::detail::queue_wrap_marker);
  CHECK(get_is_corrupt(sq->q));
  CHECK(sq->state().tail.load() == at);
}

TEST_CASE("queue: cursors off the 8-byte grid are corrupt, not read past the ring",
          "[reliability][fuzz]") {
  // Was: a tail at ring - 3 read its length word 5 bytes past the ring; a head
  // there wrote a wrap marker 5 bytes past it.
  auto sq = std::make_unique<shared_queue>();
  const std::uint64_t odd = ring - 3;
  sq->state().tail.store(odd);
  sq->state().head.store(coproc::detail::cursor_advance(odd, 16, 1));
  CHECK(get_is_corrupt(sq->q));
  CHECK(sq->state().tail.load() == odd);

  auto other = std::make_unique<shared_queue>();
  other->state().head.store(odd);
  other->state().tail.store(odd);
  CHECK(put_is_corrupt(other->q));
  CHECK(other->state().head.load() == odd);
}

TEST_CASE("queue: a tail ahead of head makes put fail, not wait for room for ever",
          "[reliability][fuzz]") {
  // Was: try_put returned false (full) for ever, and put() slept for ever.
  auto sq = std::make_unique<shared_queue>();
  sq->state().head.store(8);
  sq->state().tail.store(64);  // "2^40 - 56 bytes in the queue": never room
  CHECK(put_is_corrupt(sq->q));
  CHECK(sq->state().head.load() == 8);
}

TEST_CASE("queue: an overwritten ring size word moves nothing", "[reliability][fuzz]") {
  // Was: offsets were taken modulo the size word in shared memory, so a peer
  // writing 1 MiB there sent the consumer and producers 1 MiB past a 4 KiB ring.
  auto sq = std::make_unique<shared_queue>();
  const std::uint64_t huge = std::uint64_t{1} << 20;
  std::memcpy(const_cast<std::uint64_t*>(&sq->state().capacity), &huge, sizeof huge);
  CHECK(sq->q.max_bytes() == ring);
  CHECK(sq->q.max_item_bytes() == ring / 2 - 8);
  for (int i = 0; i < 200; ++i) {  // several laps of the ring
    std::string item(100, static_cast<char>('a' + i % 26));
    sq->q.put(item);
    auto got = sq->q.try_get();
    REQUIRE(got.has_value());
    CHECK(*got == item);
  }
}
