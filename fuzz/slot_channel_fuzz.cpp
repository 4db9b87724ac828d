// libFuzzer target: both ends of a worker slot's protocol (slot_channel) over
// one slot's memory, which the fuzzer also scribbles on (a task can write any
// byte of its slot at any time). Whatever the shared words, the ring cursors
// and the frame headers say, the parent's receive() and the worker's
// next_task()/task_body() only hand out bodies inside their frame or their
// arena, a frame error is a std::system_error with a frame code, and no end
// ever blocks (the worker's waits give up at once here).
//
// Input: ops, one byte each, maybe followed by a word:
//   0: parent send(size = next byte * 97)   3: parent receive (reads every body byte)
//   1: worker takes the next task frame      4: peer writes a word at (word % slot bytes) & ~7
//   2: worker writes a result (size = next byte * 131)
//   5: parent withdraws the last frame it sent
//   6: worker appends a value (size = next byte * 13 % 300) to its values frame,
//      opening one when needed   7: worker seals its values frame
//
//   ./x fuzz 30       (or build-fuzz/fuzz/slot_channel_fuzz -max_total_time=30)

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <system_error>

#include "coproc/executors/detail/slot_channel.hpp"
#include "fuzz_support.hpp"

namespace {

namespace d = coproc::detail;

constexpr std::size_t ring_bytes = 1024;
constexpr std::size_t arena_bytes = 4096;
constexpr std::size_t slot_bytes = d::slot_channel::bytes(ring_bytes, arena_bytes);

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "slot_channel: %s\n", what);
  std::abort();
}

/// A body must lie inside [lo, hi): its frame's ring or its arena.
void check_within(std::span<const std::byte> body, const std::byte* lo, const std::byte* hi,
                  const char* what) {
  if (body.data() < lo || body.data() + body.size() > hi) {
    finding(what);
  }
}

std::uint64_t read_all(std::span<const std::byte> body) {
  std::uint64_t sum = 0;
  for (std::byte b : body) {
    sum += static_cast<std::uint8_t>(b);
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Exactly one slot on the heap: ASan reports any byte touched past it.
  auto mem = std::make_unique<std::byte[]>(slot_bytes);
  std::byte* base = mem.get();
  d::slot_channel::reset(base, ring_bytes);
  d::slot_channel parent(base, ring_bytes, arena_bytes);
  d::slot_channel worker(base, ring_bytes, arena_bytes);
  const std::byte* end = base + slot_bytes;
  const std::byte* results_data =
      base + d::slot_channel::round(sizeof(d::slot_shared)) + ring_bytes;
  const timespec now{0, 0};
  auto give_up = [] { return true; };
  d::slot_channel::sent_frame last;
  std::uint64_t next_id = 1;
  std::uint64_t sum = 0;
  d::values_frame values;  // the worker's open values frame
  coproc::fuzz::input in{data, size};
  std::uint8_t op = 0;
  for (int steps = 0; steps < 256 && in.byte(op); ++steps) {
    switch (op % 8) {
      case 0: {
        std::uint8_t n = 0;
        in.byte(n);
        std::size_t body = n * 97u % arena_bytes;
        bool arena = parent.needs_arena(body);
        if (arena && !parent.input_arena_free()) {
          break;
        }
        auto f = parent.send(next_id++, 0, body, arena, [](std::span<std::byte> out) {
          std::memset(out.data(), 0x5a, out.size());
        });
        if (f.state != nullptr) {
          last = f;
          parent.notify_worker();
        }
        break;
      }
      case 1: {
        std::span<std::byte> frame = worker.next_task();
        if (frame.data() == nullptr || !worker.take(frame)) {
          break;
        }
        try {
          std::span<const std::byte> body = worker.task_body(frame);
          bool in_frame = body.data() >= frame.data() &&
                          body.data() + body.size() <= frame.data() + frame.size();
          if (!in_frame) {
            check_within(body, worker.in_arena, worker.in_arena + arena_bytes,
                         "task body outside its frame and the input arena");
          }
          sum += read_all(body);
        } catch (const std::system_error& e) {
          coproc::fuzz::allow_only_frame_errors(e);
        }
        worker.task_done();
        break;
      }
      case 2: {
        std::uint8_t n = 0;
        in.byte(n);
        std::size_t body = n * 131u % arena_bytes;
        std::span<std::byte> out = worker.reserve_result(body, now, give_up);
        if (out.data() == nullptr) {
          break;
        }
        check_within(out, base, end, "result space outside the slot");
        std::memset(out.data(), 0xa5, out.size());
        worker.commit_result(next_id, d::result_value, body, now, give_up);
        break;
      }
      case 3:
        parent.receive(
            [&](const d::result_header& h, std::span<const std::byte> body, bool valid) {
              if (valid) {
                bool in_ring = body.data() >= results_data &&
                               body.data() + body.size() <= results_data + ring_bytes;
                if (h.place == d::result_in_input_arena) {
                  check_within(body, parent.in_arena, parent.in_arena + arena_bytes,
                               "result body outside the input arena");
                } else if (!in_ring) {
                  check_within(body, parent.out_arena, parent.out_arena + arena_bytes,
                               "result body outside the result ring and the output arena");
                }
                sum += read_all(body);
              } else if (!body.empty()) {
                finding("an invalid result frame came with a body");
              }
            },
            [] {});
        break;
      case 4: {
        std::uint64_t at = (in.word() % slot_bytes) & ~std::uint64_t{7};
        std::uint64_t w = in.word();
        std::memcpy(base + at, &w, sizeof w);
        break;
      }
      case 6: {
        std::uint8_t n = 0;
        in.byte(n);
        const std::size_t value = n * 13u % 300;
        const std::size_t records = d::slot_channel::inline_limit(worker.results) -
                                    sizeof(d::result_header) - d::values_frame::head_bytes;
        if (d::values_frame::record_bytes(value) > records) {
          break;
        }
        if (!values.fits(value)) {
          values.seal();
          std::span<std::byte> out =
              worker.reserve_result(d::values_frame::head_bytes + records, now, give_up);
          if (out.data() == nullptr) {
            break;
          }
          check_within(out, base, end, "values frame outside the slot");
          values.open(out.data(), records);
          worker.commit_result(next_id, d::result_emitted, d::values_frame::head_bytes + records,
                               now, give_up);
        }
        std::memset(values.value_at(), 0x3c, value);
        values.append(value);
        break;
      }
      case 7:
        values.seal();
        break;
      default:
        if (last.state != nullptr) {
          (void)parent.withdraw(last);
          last = {};  // its frame may be overwritten once the worker passed it
        }
        break;
    }
  }
  asm volatile("" : : "r"(sum));
  return 0;
}
