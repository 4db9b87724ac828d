// Out-of-line throws for the codec: keeps the hot inline paths small.

#include "coproc/ipc/codec.hpp"

#include <sys/mman.h>

#include <cstdint>

namespace coproc::detail {

void throw_frame_corrupt() {
  throw std::system_error(make_error_code(errc::frame_corrupt));
}

void throw_buffer_too_small() {
  throw std::system_error(make_error_code(errc::frame_too_large),
                          "encode: the output buffer is smaller than the encoded values");
}

void advise_huge_pages(const void* p, std::size_t n) noexcept {
  constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
  auto begin = (reinterpret_cast<std::uintptr_t>(p) + huge - 1) & ~(huge - 1);
  auto end = (reinterpret_cast<std::uintptr_t>(p) + n) & ~(huge - 1);
  if (end > begin) {
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
}

}  // namespace coproc::detail
