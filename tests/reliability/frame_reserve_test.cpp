// Regression test for what fuzz/manager_request_fuzz found: a connection
// reserved room for a whole frame as soon as its 16-byte header arrived, so
// a peer (a manager client talking to the manager's server, a server talking
// to a proxy, any pipe peer) could make the receiver allocate up to
// max_message_size (4 GiB by default) with 16 bytes. Fix
// (ipc/src/connection.cpp, read_space): reserve at most 1 MiB beyond the
// bytes that arrived, doubling as they arrive.

#include <sys/socket.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "coproc/ipc/pipe.hpp"
#include "coproc/runtime/errc.hpp"

// The largest array allocation of this program (connections allocate their
// frame buffers as std::byte[]).
namespace {
std::atomic<std::size_t> largest_array{0};
}  // namespace

void* operator new[](std::size_t n) {
  std::size_t seen = largest_array.load(std::memory_order_relaxed);
  while (n > seen && !largest_array.compare_exchange_weak(seen, n)) {
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) {
    return p;
  }
  throw std::bad_alloc();
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

TEST_CASE("a frame header alone does not make the receiver allocate its claimed size",
          "[reliability][fuzz]") {
  asio::io_context ctx;
  auto [reader, writer] =
      coproc::make_connection_pair(ctx.get_executor(), {.spin = std::chrono::microseconds(0)});
  int fd = writer.release().release();
  // What coproc's frame header says: magic, cpu, size (3 GiB, under the
  // default 4 GiB maximum), then 100 bytes and the end of the stream.
  struct {
    std::uint32_t magic = 0xC0F7A3E1u;
    std::int32_t cpu = -1;
    std::uint64_t size = std::uint64_t{3} << 30;
  } header;
  static_assert(sizeof header == 16);
  std::vector<std::byte> bytes(sizeof header + 100);
  std::memcpy(bytes.data(), &header, sizeof header);
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  largest_array = 0;
  std::error_code got;
  try {
    (void)reader.receive<std::vector<std::byte>>();
  } catch (const std::system_error& e) {
    got = e.code();
  }
  CHECK(got == coproc::errc::end_of_stream);
  INFO("largest allocation: " << largest_array.load() << " bytes");
  CHECK(largest_array.load() <= (std::size_t{4} << 20));
}

TEST_CASE("a large frame still arrives whole while its buffer grows", "[reliability][fuzz]") {
  asio::io_context ctx;
  auto [reader, writer] =
      coproc::make_connection_pair(ctx.get_executor(), {.spin = std::chrono::microseconds(0)});
  std::vector<std::uint32_t> sent(3'000'000);  // 12 MB: many reads, several growths
  for (std::size_t i = 0; i < sent.size(); ++i) {
    sent[i] = static_cast<std::uint32_t>(i * 2654435761u);
  }
  std::thread t([&] { writer.send(sent); });
  auto got = reader.receive<std::vector<std::uint32_t>>();
  t.join();
  CHECK(got == sent);
}
