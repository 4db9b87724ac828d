#pragma once
// Shared by the libFuzzer targets: the error codes a decoder may fail with.

#include <cstdio>
#include <cstdlib>
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

}  // namespace coproc::fuzz
