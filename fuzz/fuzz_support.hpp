#pragma once
// Shared by the libFuzzer targets: the error codes a decoder may fail with.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "coproc/runtime/errc.hpp"

namespace coproc::fuzz {

/// A decode may fail only with one of coproc's frame errors.
inline void allow_only_frame_errors(const std::system_error& e) {
  if (e.code() != coproc::errc::frame_corrupt && e.code() != coproc::errc::frame_too_large &&
      e.code() != coproc::errc::payload_too_large) {
    std::fprintf(stderr, "coproc fuzz: unexpected error: %s\n", e.what());
    std::abort();
  }
}

/// The fuzzer's bytes read as ops: a byte, or a word (fewer bytes at the end).
struct input {
  const std::uint8_t* p;
  std::size_t left;
  bool byte(std::uint8_t& out) {
    if (left == 0) {
      return false;
    }
    out = *p++;
    --left;
    return true;
  }
  std::uint64_t word() {
    std::uint64_t w = 0;
    std::size_t n = left < 8 ? left : 8;
    std::memcpy(&w, p, n);
    p += n;
    left -= n;
    return w;
  }
};

}  // namespace coproc::fuzz
