// libFuzzer target: coproc::shm_ring over ring memory and header words the
// fuzzer writes (a peer process can write any bytes there, at any time).
// Whatever the length words, the cursors (head, tail: the peer's and this
// side's own) and the capacity word say, the consumer's try_peek() must only
// return spans inside the ring's data area and the producer's try_reserve()
// only spans it may write; nothing is read or written outside the ring.
//
// Input: [ring data: 256 bytes][ops...]. Each op is one byte, maybe followed
// by an 8-byte word:
//   0: consumer try_peek (+ pop)      4: producer try_reserve(n = next byte * 2) + commit
//   1: peer writes head = word        5: peer writes capacity = word
//   2: peer writes tail = word        6: peer writes a length word at (word % 256) & ~7
//   3: peer writes head = tail + (word % 512)
// The consumer and the producer are two views of the same ring, as in a pool
// (one per process), so a frame the producer commits is one the consumer reads.
//
//   ./x fuzz 30       (or build-fuzz/fuzz/shm_ring_fuzz -max_total_time=30)

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "coproc/ipc/shm_ring.hpp"
#include "fuzz_support.hpp"

namespace {

constexpr std::size_t capacity = 256;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "shm_ring: %s\n", what);
  std::abort();
}

bool inside(std::span<std::byte> s, const std::byte* ring) {
  return s.data() >= ring && s.data() + s.size() <= ring + capacity;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < capacity) {
    return 0;
  }
  auto header = std::make_unique<coproc::shm_ring_header>();
  // Exactly `capacity` bytes on the heap: ASan reports any byte touched past them.
  auto ring = std::make_unique<std::byte[]>(capacity);
  std::memcpy(ring.get(), data, capacity);
  coproc::shm_ring::init(header.get(), capacity);
  coproc::shm_ring consumer(header.get(), ring.get(), capacity);
  coproc::shm_ring producer(header.get(), ring.get(), capacity);
  coproc::fuzz::input in{data + capacity, size - capacity};

  std::uint64_t sum = 0;
  std::uint8_t op = 0;
  for (int steps = 0; steps < 256 && in.byte(op); ++steps) {
    switch (op % 7) {
      case 0: {
        std::span<std::byte> frame = consumer.try_peek();
        if (frame.data() == nullptr) {
          break;
        }
        if (!inside(frame, ring.get())) {
          finding("try_peek returned a frame past the end of the ring");
        }
        for (std::byte b : frame) {  // a consumer reads every byte it was given
          sum += static_cast<std::uint8_t>(b);
        }
        consumer.pop();
        break;
      }
      case 1:
        header->head.store(in.word());
        break;
      case 2:
        header->tail.store(in.word());
        break;
      case 3:
        header->head.store(header->tail.load() + in.word() % 512);
        break;
      case 4: {
        std::uint8_t n = 0;
        in.byte(n);
        std::size_t want = static_cast<std::size_t>(n) * 2 % producer.max_frame();
        std::span<std::byte> frame = producer.try_reserve(want);
        if (frame.data() == nullptr) {
          break;
        }
        if (!inside(frame, ring.get())) {
          finding("try_reserve returned space past the end of the ring");
        }
        std::memset(frame.data(), 0x5a, frame.size());  // a producer writes all it reserved
        producer.commit(want);
        break;
      }
      case 5:
        header->capacity = in.word();
        break;
      default: {
        std::uint64_t at = (in.word() % capacity) & ~std::uint64_t{7};
        std::uint64_t len = in.word();
        std::memcpy(ring.get() + at, &len, sizeof len);
        break;
      }
    }
  }
  asm volatile("" : : "r"(sum));
  return 0;
}
