// libFuzzer target: the consumer (and then a producer) of coproc::queue<T>
// over shared memory a peer process wrote: the cursors (head, tail), the
// closed flag, the ring size word and every ring byte. Whatever they hold,
// try_get/get_some/try_put may only return items, return "empty", or throw
// std::system_error with frame_corrupt (or queue_closed when the flag is
// set); tail never moves past head or off its 8-byte grid, nothing outside
// the ring is read or written, nothing is allocated beyond the ring's bytes.
//
// Input: [mode][head: 8 bytes][tail: 8 bytes][ring bytes...] over a
// 4096-byte ring. mode bit 0 aligns both cursors (reaches the frame checks
// more often), bit 1 sets closed, bit 2 overwrites the shared ring size,
// bits 3-4 pick T, bit 5 ends with a try_put, bit 6 uses get_some batches.
//
//   ./x fuzz 30       (or build-fuzz/fuzz/queue_fuzz -max_total_time=30)

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

#include "coproc/ipc/queue.hpp"
#include "fuzz_support.hpp"
#include "memfd_alias.hpp"

namespace {

constexpr std::size_t ring = 4096;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "coproc queue fuzz: %s\n", what);
  std::abort();
}

struct cursors {
  std::uint64_t head;
  std::uint64_t tail;
};

cursors read_cursors(const coproc::detail::queue_state& s) {
  return {s.head.load(), s.tail.load()};
}

/// tail may only stay, or move forward on its grid and never past head.
void check_tail(const cursors& before, const cursors& after) {
  if (after.tail == before.tail) {
    return;
  }
  using namespace coproc::detail;
  if ((after.tail & 7) != 0 || (before.tail & 7) != 0 ||
      cursor_bytes(before.tail, after.tail) > cursor_bytes(before.tail, before.head) ||
      cursor_bytes(before.tail, before.head) > ring) {
    fail("tail moved past head (or off its grid)");
  }
}

void allow(const std::system_error& e, bool closed) {
  if (e.code() == coproc::errc::queue_closed && closed) {
    return;
  }
  if (e.code() != coproc::errc::frame_corrupt) {
    std::fprintf(stderr, "coproc queue fuzz: unexpected error: %s\n", e.what());
    std::abort();
  }
}

template <class T>
T sample() {
  if constexpr (std::is_same_v<T, std::string>) {
    return "sample";
  } else {
    return T{};
  }
}

template <class T>
void run(std::uint8_t mode, std::uint64_t head, std::uint64_t tail, const std::uint8_t* bytes,
         std::size_t n) {
  int fd = coproc::fuzz::next_free_fd();
  coproc::queue<T> q({.max_items = 1000, .max_bytes = ring});
  const std::size_t region = sizeof(coproc::detail::queue_state) + ring;
  coproc::fuzz::memfd_alias peer(fd, "coproc-queue", region);
  auto& s = *reinterpret_cast<coproc::detail::queue_state*>(peer.data());
  std::byte* data = peer.data() + sizeof(coproc::detail::queue_state);
  std::memcpy(data, bytes, n < ring ? n : ring);
  s.head.store(head);
  s.tail.store(tail);
  const bool closed = (mode & 2) != 0;
  if (closed) {
    s.closed.store(1);
  }
  if ((mode & 4) != 0) {
    // A peer may write the size word too: offsets must not derive from it.
    std::uint64_t huge = std::uint64_t{1} << 20;
    std::memcpy(const_cast<std::uint64_t*>(&s.capacity), &huge, sizeof huge);
  }

  for (int i = 0; i < 32; ++i) {
    cursors before = read_cursors(s);
    bool more = true;
    try {
      if ((mode & 64) != 0) {
        // get_some waits only while empty: call it only when it cannot wait.
        if (before.head == before.tail && !closed) {
          break;
        }
        std::vector<T> batch = q.get_some(4);
        more = !batch.empty();
      } else {
        more = q.try_get().has_value();
      }
    } catch (const std::system_error& e) {
      allow(e, closed);
      more = false;
    }
    check_tail(before, read_cursors(s));
    if (!more) {
      break;
    }
  }

  if ((mode & 32) != 0) {
    cursors before = read_cursors(s);
    try {
      (void)q.try_put(sample<T>());
    } catch (const std::system_error& e) {
      allow(e, closed);
    }
    cursors after = read_cursors(s);
    using namespace coproc::detail;
    if (after.head != before.head &&
        ((after.head & 7) != 0 || cursor_bytes(before.head, after.head) > ring)) {
      fail("a put moved head off its grid or by more than the ring");
    }
  }
  // The last page's slack past the ring is memory a put must never touch.
  const long page = ::sysconf(_SC_PAGESIZE);
  const std::size_t slack = (page - region % page) % page;
  for (std::size_t i = 0; i < slack; ++i) {
    if (peer.data()[region + i] != std::byte{0}) {
      fail("a write past the end of the ring");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 17) {
    return 0;
  }
  const std::uint8_t mode = data[0];
  std::uint64_t head = 0;
  std::uint64_t tail = 0;
  std::memcpy(&head, data + 1, 8);
  std::memcpy(&tail, data + 9, 8);
  if ((mode & 1) != 0) {
    head &= ~std::uint64_t{7};
    tail &= ~std::uint64_t{7};
  }
  data += 17;
  size -= 17;
  switch ((mode >> 3) & 3) {
    case 0:
      run<std::string>(mode, head, tail, data, size);
      break;
    case 1:
      run<std::vector<std::int32_t>>(mode, head, tail, data, size);
      break;
    case 2:
      run<std::map<std::string, std::optional<double>>>(mode, head, tail, data, size);
      break;
    default:
      run<std::variant<std::int64_t, std::string, std::vector<bool>>>(mode, head, tail, data, size);
      break;
  }
  return 0;
}
