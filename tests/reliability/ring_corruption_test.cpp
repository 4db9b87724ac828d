// Regression tests for what the fuzz targets found (fuzz/*.cpp): bytes from
// another process that a decoder trusted too far. Each was fixed in a0af2e5;
// a finding not fixed yet would carry [!mayfail] so the suite stays green.

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch_test_macros.hpp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/slot_channel.hpp"
#include "coproc/ipc/shm_ring.hpp"
#include "coproc/runtime/errc.hpp"

namespace {

/// A ring of 256 data bytes inside a larger buffer, so a frame that runs past
/// the ring's end stays inside this test's own memory.
struct fake_ring {
  static constexpr std::size_t capacity = 256;
  coproc::shm_ring_header header{};
  alignas(8) std::byte data[2 * capacity]{};
  fake_ring(std::uint64_t head, std::uint64_t tail) {
    coproc::shm_ring::init(&header, capacity);
    header.head.store(head);
    header.tail.store(tail);
  }
  void length_at(std::size_t pos, std::uint64_t len) { std::memcpy(data + pos, &len, sizeof len); }
  bool inside(std::span<std::byte> s) const {
    return s.data() >= data && s.data() + s.size() <= data + capacity;
  }
};

/// A trivially copyable functor: its 4 bytes lead a task body.
struct scaled {
  std::int32_t factor;
  int operator()() const { return factor; }
};

class null_writer final : public coproc::detail::result_writer {
 public:
  std::span<std::byte> reserve(std::size_t n) override {
    buf_.resize(n);
    return buf_;
  }
  void commit(std::size_t) override {}
  std::byte* reserve_emitted(std::size_t n) override { return reserve(n).data(); }
  void commit_emitted(std::size_t) override {}

 private:
  std::vector<std::byte> buf_;
};

}  // namespace

TEST_CASE("shm_ring flags a length word above max_frame as corrupt", "[reliability][fuzz]") {
  auto ring = std::make_unique<fake_ring>(1024, 0);
  ring->length_at(0, 1000);  // > capacity / 2 - 8
  coproc::shm_ring consumer(&ring->header, ring->data);
  auto frame = consumer.try_peek();
  CHECK(frame.data() == nullptr);
  CHECK(consumer.corrupt());
}

TEST_CASE("shm_ring refuses a frame that runs past the end of the ring", "[reliability][fuzz]") {
  // Found by fuzz/shm_ring_fuzz. try_peek() checks a length word against
  // max_frame() (capacity / 2 - 8) only: a frame of max_frame() bytes whose
  // length word sits in the second half of the ring ends past the data area,
  // and the consumer (pool_core::drain, a worker, a queue) then reads beyond
  // the ring. A producer never writes that (it wraps first), so only
  // overwritten shared memory gets there. Fix (ipc/include/coproc/ipc/shm_ring.hpp,
  // try_peek): also refuse `pos + frame_overhead + len > capacity` (and a
  // frame longer than head - tail) as corrupt.
  auto ring = std::make_unique<fake_ring>(1024, 144);
  ring->length_at(144, 120);  // 144 + 8 + 120 = 272 > 256
  coproc::shm_ring consumer(&ring->header, ring->data);
  auto frame = consumer.try_peek();
  bool refused = frame.data() == nullptr && consumer.corrupt();
  CHECK((refused || ring->inside(frame)));
}

TEST_CASE("run_task refuses a task body shorter than its callable", "[reliability][fuzz]") {
  // Found by fuzz/task_frame_fuzz (by reading it first). run_task<F>() copies
  // callable_size<F>() bytes from the body and takes body.subspan(that size)
  // without checking body.size(): a truncated task frame reads past its body
  // (and the subspan is undefined). Fix (executors/include/coproc/executors/
  // detail/callable.hpp, run_task): throw frame_corrupt when body.size() <
  // callable_size<F>().
  //
  // The 2-byte body ends right before a PROT_NONE page, so the overread is a
  // SIGSEGV; a forked child runs it and says how it went.
  long page = ::sysconf(_SC_PAGESIZE);
  void* mem = ::mmap(nullptr, 2 * static_cast<std::size_t>(page), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  REQUIRE(::mprotect(static_cast<std::byte*>(mem) + page, static_cast<std::size_t>(page),
                     PROT_NONE) == 0);
  std::span<const std::byte> body(static_cast<std::byte*>(mem) + page - 2, 2);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGSEGV, SIG_DFL);  // not Catch2's handler: it would report from the child
    null_writer out;
    try {
      coproc::detail::run_task<scaled>(body, out);
      ::_exit(2);  // ran a callable made of bytes it does not have
    } catch (const std::system_error& e) {
      ::_exit(e.code() == coproc::errc::frame_corrupt ? 0 : 3);
    } catch (...) {
      ::_exit(4);
    }
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  ::munmap(mem, 2 * static_cast<std::size_t>(page));
  INFO("child status " << status << (WIFSIGNALED(status) ? " (killed by a signal)" : ""));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

// slot_channel_fuzz: a task frame shorter than task_header was taken, its
// header read and its state word swapped past the frame, and its body
// bounded by frame.size() - sizeof(task_header), which wrapped.
TEST_CASE("a task frame shorter than its header is corrupt, never taken",
          "[ring_corruption][slot_channel]") {
  namespace d = coproc::detail;
  constexpr std::size_t ring_bytes = 1024;
  constexpr std::size_t arena_bytes = 4096;
  std::vector<std::byte> slot(d::slot_channel::bytes(ring_bytes, arena_bytes) + 64);
  std::byte* base = slot.data() + (64 - reinterpret_cast<std::uintptr_t>(slot.data()) % 64) % 64;
  d::slot_channel::reset(base, ring_bytes);
  d::slot_channel rogue(base, ring_bytes, arena_bytes);
  d::slot_channel worker(base, ring_bytes, arena_bytes);
  std::span<std::byte> frame = rogue.tasks.try_reserve(8);
  REQUIRE(frame.data() != nullptr);
  std::memset(frame.data(), 0, frame.size());
  rogue.tasks.commit(8);
  CHECK(worker.next_task().data() == nullptr);
  CHECK(worker.tasks_corrupt());
  CHECK(worker.shared->consumed.load() == 0);  // nothing was taken
}
