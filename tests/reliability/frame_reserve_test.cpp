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
#include <catch2/catch_test_macros.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "coproc/ipc/pipe.hpp"
#include "coproc/runtime/errc.hpp"

namespace {

/// The process's peak virtual size (kB): an allocation of gigabytes shows
/// there even when its pages are never touched. (Replacing operator new[]
/// would say more, but TSan's runtime defines it too: the link fails.)
std::size_t vm_peak_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmPeak:", 0) == 0) {
      return std::stoul(line.substr(7));
    }
  }
  return 0;
}

}  // namespace

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
  const std::size_t peak_before = vm_peak_kb();
  REQUIRE(peak_before > 0);
  std::error_code got;
  try {
    (void)reader.receive<std::vector<std::byte>>();
  } catch (const std::system_error& e) {
    got = e.code();
  }
  CHECK(got == coproc::errc::end_of_stream);
  const std::size_t grew_kb = vm_peak_kb() - peak_before;
  INFO("VmPeak grew by " << grew_kb << " kB");
  CHECK(grew_kb < 512 * 1024);  // it grew by the claimed 3 GiB before the fix
}

TEST_CASE("a large frame still arrives whole while its buffer grows", "[reliability][fuzz]") {
  asio::io_context ctx;
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto ends =
      coproc::make_connection_pair(ctx.get_executor(), {.spin = std::chrono::microseconds(0)});
  coproc::connection& reader = ends.first;
  coproc::connection& writer = ends.second;
  std::vector<std::uint32_t> sent(3'000'000);  // 12 MB: many reads, several growths
  for (std::size_t i = 0; i < sent.size(); ++i) {
    sent[i] = static_cast<std::uint32_t>(i * 2654435761u);
  }
  std::thread t([&] { writer.send(sent); });
  auto got = reader.receive<std::vector<std::uint32_t>>();
  t.join();
  CHECK(got == sent);
}
