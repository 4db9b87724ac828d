// libFuzzer target: the consumer side of coproc::shm_ring over ring memory the
// fuzzer writes (a peer process can write any bytes there). try_peek() must
// only ever return a span inside the ring's data area, and try_peek/pop must
// never read outside it, whatever the length words and the head say.
//
// Input: [mode][head: 8 bytes][tail: 8 bytes][ring data...]. The tail is
// aligned to 8 (only the consumer writes it); mode bit 0 keeps the tail at 0.
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
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 17) {
    return 0;
  }
  std::uint8_t mode = data[0];
  std::uint64_t head = 0;
  std::uint64_t tail = 0;
  std::memcpy(&head, data + 1, 8);
  std::memcpy(&tail, data + 9, 8);
  tail = (mode & 1) != 0 ? 0 : (tail & ~std::uint64_t{7});
  data += 17;
  size -= 17;

  auto header = std::make_unique<coproc::shm_ring_header>();
  // Exactly `capacity` bytes on the heap: ASan reports any byte read past them.
  auto ring = std::make_unique<std::byte[]>(capacity);
  std::memcpy(ring.get(), data, size < capacity ? size : capacity);
  coproc::shm_ring::init(header.get(), capacity);
  header->head.store(head);
  header->tail.store(tail);

  coproc::shm_ring consumer(header.get(), ring.get());
  std::uint64_t sum = 0;
  for (int i = 0; i < 64; ++i) {
    std::span<std::byte> frame = consumer.try_peek();
    if (frame.data() == nullptr) {
      break;
    }
    if (frame.data() < ring.get() || frame.data() + frame.size() > ring.get() + capacity) {
      // Was a finding (regression test: tests/reliability/ring_corruption_test.cpp).
      std::fprintf(stderr, "shm_ring::try_peek returned a frame past the end of the ring\n");
      std::abort();
      break;
    }
    for (std::byte b : frame) {  // a consumer reads every byte it was given
      sum += static_cast<std::uint8_t>(b);
    }
    consumer.pop();
  }
  asm volatile("" : : "r"(sum));
  return 0;
}
