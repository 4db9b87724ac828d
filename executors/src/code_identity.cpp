// Code identity (detail/code_identity.hpp): the anchor, the scan of the main
// program (executable segments, build id, the file it was mapped from), the
// checks.

#include "coproc/executors/detail/code_identity.hpp"

#include <elf.h>
#include <link.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <system_error>

#include "coproc/runtime/errc.hpp"

namespace coproc::detail {

void image_anchor() noexcept {}

const void* checked_code_address(std::int64_t offset) {
  const void* p = code_address(offset);
  const auto& allowed = allowed_code();
  if (allowed.count == 0 || allowed.contains(p)) {
    return p;
  }
  throw std::system_error(coproc::errc::function_mismatch,
                          "the task's code is not in the main executable (a function of a "
                          "shared library): a separately exec'd image (a start_method::spawn "
                          "worker, an MPI rank) knows the addresses of the executable's code "
                          "only");
}

bool same_image(const image_id& a, const image_id& b) noexcept {
  return a.build_id_len == b.build_id_len &&
         std::memcmp(a.build_id, b.build_id, a.build_id_len) == 0 &&
         a.anchor_offset == b.anchor_offset && a.exe_dev == b.exe_dev && a.exe_ino == b.exe_ino;
}

namespace {

struct scan_state {
  program_image* out;
  std::string build_id;  // the note's raw bytes
  std::uintptr_t load_bias = 0;
};

void read_build_id(const ElfW(Phdr) & ph, std::uintptr_t begin, std::string& out) {
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
      return;
    }
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
      out.assign(reinterpret_cast<const char*>(desc), nh.n_descsz);
    }
    p = next;
  }
}

// The first object dl_iterate_phdr reports is the main program.
int scan_main_program(dl_phdr_info* info, std::size_t, void* data) {
  auto* s = static_cast<scan_state*>(data);
  s->load_bias = info->dlpi_addr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    std::uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) != 0 &&
        !s->out->code.add(begin, begin + ph.p_memsz)) {
      s->out->code_complete = false;  // never seen: an executable has one or two
    }
    if (ph.p_type == PT_NOTE) {
      read_build_id(ph, begin, s->build_id);
    }
  }
  return 1;  // stop after the main program
}

/// Device and inode of the file whose mapping holds `p` (from /proc/self/maps).
bool mapped_file(const void* p, std::uint64_t& dev, std::uint64_t& ino) {
  std::ifstream maps("/proc/self/maps");
  auto a = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long begin = 0, end = 0, offset = 0, inode = 0;
    unsigned major = 0, minor = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s %lx %x:%x %lu", &begin, &end, perms, &offset, &major,
                    &minor, &inode) == 7 &&
        a >= begin && a < end) {
      dev = makedev(major, minor);
      ino = inode;
      return inode != 0;
    }
  }
  return false;
}

std::string hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (unsigned char c : bytes) {
    s += digits[c >> 4];
    s += digits[c & 15];
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

program_image scan_own_image() {
  program_image image;
  scan_state s{&image, {}, 0};
  ::dl_iterate_phdr(&scan_main_program, &s);
  if (s.build_id.size() <= sizeof image.id.build_id) {
    image.id.build_id_len = static_cast<std::uint32_t>(s.build_id.size());
    std::memcpy(image.id.build_id, s.build_id.data(), s.build_id.size());
  }
  image.id.anchor_offset =
      static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(&image_anchor) - s.load_bias);
  struct stat st {};
  if (::stat("/proc/self/exe", &st) == 0) {
    image.id.exe_dev = st.st_dev;
    image.id.exe_ino = st.st_ino;
    // Not so when the program was run as `ld.so PROGRAM` (/proc/self/exe is
    // then the loader) or coproc lives in a shared library.
    std::uint64_t dev = 0, ino = 0;
    image.anchor_in_exe = mapped_file(reinterpret_cast<const void*>(&image_anchor), dev, ino) &&
                          dev == image.id.exe_dev && ino == image.id.exe_ino;
  }
  return image;
}

}  // namespace

const program_image& own_image() {
  static const program_image image = scan_own_image();
  return image;
}

const std::string& build_id_text() {
  static const std::string text = [] {
    const image_id& id = own_image().id;
    if (id.build_id_len == 0) {
      return file_hash();
    }
    return hex(std::string(reinterpret_cast<const char*>(id.build_id), id.build_id_len));
  }();
  return text;
}

}  // namespace coproc::detail
