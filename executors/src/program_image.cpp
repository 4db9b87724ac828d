#include "coproc/executors/detail/program_image.hpp"

#include <elf.h>
#include <link.h>

#include <cstring>

namespace coproc::detail {
namespace {

// The first object dl_iterate_phdr reports is the main program.
int scan_main_program(dl_phdr_info* info, std::size_t, void* data) {
  auto* out = static_cast<program_image*>(data);
  out->load_bias = info->dlpi_addr;
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
        out->build_id.assign(reinterpret_cast<const char*>(desc), nh.n_descsz);
      }
      p = next;
    }
  }
  return 1;  // stop after the main program
}

}  // namespace

program_image scan_program_image() {
  program_image image;
  ::dl_iterate_phdr(&scan_main_program, &image);
  return image;
}

}  // namespace coproc::detail
