// What identifies this executable across separate execs: its GNU build id and
// the executable segments of the main program (code offsets from image_anchor
// are only meaningful there).

#include <elf.h>
#include <link.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

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

// The first object dl_iterate_phdr reports is the main program.
int visit(dl_phdr_info* info, std::size_t, void* data) {
  auto* out = static_cast<image_info*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    std::uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) != 0) {
      out->code.emplace_back(begin, begin + ph.p_memsz);
    }
    if (ph.p_type != PT_NOTE) {
      continue;
    }
    // Notes: namesz, descsz, type, then name and desc, each padded to 4 bytes.
    const auto* p = reinterpret_cast<const unsigned char*>(begin);
    const auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      ElfW(Nhdr) nh;
      std::memcpy(&nh, p, sizeof nh);
      const unsigned char* name = p + sizeof nh;
      const unsigned char* desc = name + ((nh.n_namesz + 3) & ~3u);
      const unsigned char* next = desc + ((nh.n_descsz + 3) & ~3u);
      if (next > end) {
        break;
      }
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
        out->build_id = hex(desc, nh.n_descsz);
      }
      p = next;
    }
  }
  return 1;  // stop after the main program
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
    ::dl_iterate_phdr(&visit, &i);
    if (i.build_id.empty()) {
      i.build_id = file_hash();
    }
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
