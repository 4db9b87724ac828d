// What identifies this executable across separate execs: its GNU build id and
// the executable segments of the main program (code offsets from image_anchor
// are only meaningful there).

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "coproc/executors/detail/program_image.hpp"
#include "coproc/mpi/mpi_pool.hpp"

namespace coproc::detail {
namespace {

struct image_info {
  std::string build_id;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> code;  // [begin, end)
};

std::string hex(const unsigned char* p, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

// Without a build-id note (linked with --build-id=none), a hash of the
// executable's bytes identifies the build instead.
std::string file_hash() {
  std::FILE* f = std::fopen("/proc/self/exe", "rb");
  if (f == nullptr) {
    return "unknown";
  }
  std::uint64_t h = 1469598103934665603ull;
  unsigned char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    for (std::size_t i = 0; i < n; ++i) {
      h = (h ^ buf[i]) * 1099511628211ull;
    }
  }
  std::fclose(f);
  char s[40];
  std::snprintf(s, sizeof s, "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  return s;
}

const image_info& image() {
  static const image_info info = [] {
    image_info i;
    program_image image = scan_program_image();
    i.code = std::move(image.code);
    i.build_id = image.build_id.empty()
                     ? file_hash()
                     : hex(reinterpret_cast<const unsigned char*>(image.build_id.data()),
                           image.build_id.size());
    return i;
  }();
  return info;
}

}  // namespace

const std::string& mpi_build_id() {
  return image().build_id;
}

bool mpi_code_in_image(const void* p) noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  for (const auto& [begin, end] : image().code) {
    if (a >= begin && a < end) {
      return true;
    }
  }
  return false;
}

std::int64_t mpi_anchor_offset() noexcept {
  const auto& code = image().code;
  if (code.empty()) {
    return -1;
  }
  return static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(&image_anchor) -
                                   code.front().first);
}

}  // namespace coproc::detail
