#pragma once
// Shared by the libFuzzer targets: how a target reports a finding that is
// already known (and has a [!mayfail] regression test) without stopping the
// fuzzer, and how it insists on the allowed error codes.

#include <cstdio>
#include <cstdlib>
#include <system_error>

#include "coproc/runtime/errc.hpp"

namespace coproc::fuzz {

/// A known finding: abort when COPROC_FUZZ_STRICT=1 (to reproduce it),
/// otherwise report it once and go on.
inline void known_finding(const char* what) {
  static const bool strict = [] {
    const char* v = std::getenv("COPROC_FUZZ_STRICT");
    return v != nullptr && v[0] == '1';
  }();
  if (strict) {
    std::fprintf(stderr, "coproc fuzz: known finding: %s\n", what);
    std::abort();
  }
  static bool reported = false;
  if (!reported) {
    reported = true;
    std::fprintf(stderr,
                 "coproc fuzz: known finding (tolerated; COPROC_FUZZ_STRICT=1 aborts): %s\n", what);
  }
}

/// A decode may fail only with one of coproc's frame errors.
inline void allow_only_frame_errors(const std::system_error& e) {
  if (e.code() != coproc::errc::frame_corrupt && e.code() != coproc::errc::frame_too_large &&
      e.code() != coproc::errc::payload_too_large) {
    std::fprintf(stderr, "coproc fuzz: unexpected error: %s\n", e.what());
    std::abort();
  }
}

}  // namespace coproc::fuzz
