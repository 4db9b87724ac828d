#pragma once
// Code identity: how a task names code so that another process of the same
// build finds it, and how two processes tell that they are the same build.
//
// Every path that moves a code address between processes goes through here:
// forked workers (same addresses, the offset is trivially right), the spawn
// start method (a fresh exec of /proc/self/exe: the zygote compares its
// image_id with the parent's and fills allowed_code()), and mpi_pool's ranks
// (separate execs: the build id handshake, in_main_program before sending).
//
// A code address travels as its offset from image_anchor. An offset is only
// meaningful inside the main program's executable segments (a shared library
// may load at another distance from the anchor in another exec), so the
// receiver of an offset resolves it with checked_code_address, and a sender
// that knows the receiver is another exec checks in_main_program first.

#include <cstdint>
#include <string>
#include <type_traits>

namespace coproc::detail {

/// The function whose address anchors every code offset.
void image_anchor() noexcept;

inline std::int64_t code_offset(const void* p) noexcept {
  return reinterpret_cast<std::intptr_t>(p) - reinterpret_cast<std::intptr_t>(&image_anchor);
}
inline const void* code_address(std::int64_t offset) noexcept {
  return reinterpret_cast<const void*>(reinterpret_cast<std::intptr_t>(&image_anchor) + offset);
}

/// Address ranges [begin, end) of executable code; fixed size, so a worker
/// checks an address without allocating (an executable has one or two).
struct code_ranges {
  static constexpr int max_ranges = 8;
  std::uintptr_t begin[max_ranges] = {};
  std::uintptr_t end[max_ranges] = {};
  int count = 0;

  bool contains(const void* p) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    for (int i = 0; i < count; ++i) {
      if (a >= begin[i] && a < end[i]) {
        return true;
      }
    }
    return false;
  }
  /// False when the table is full (the range is not added).
  bool add(std::uintptr_t b, std::uintptr_t e) noexcept {
    if (count == max_ranges) {
      return false;
    }
    begin[count] = b;
    end[count] = e;
    ++count;
    return true;
  }
};

/// Where this process's workers may jump. Filled only in a spawned zygote
/// (an exec'd image, where an offset into a shared library would land on
/// foreign bytes); empty under fork_server, whose workers share the parent's
/// whole layout, and then every address is allowed.
inline code_ranges& allowed_code() noexcept {
  static code_ranges ranges;
  return ranges;
}

/// code_address, refused with errc::function_mismatch where allowed_code()
/// is set and does not hold it: never a jump to an unknown address.
const void* checked_code_address(std::int64_t offset);

/// Who an executable is, as a trivially copyable record: what an exec'd
/// process of the same build has equal.
struct image_id {
  std::uint32_t build_id_len = 0;
  unsigned char build_id[64] = {};  // the GNU build id note of the main program
  std::int64_t anchor_offset = 0;   // image_anchor minus the main program's load bias
  std::uint64_t exe_dev = 0;        // /proc/self/exe
  std::uint64_t exe_ino = 0;
};
static_assert(std::is_trivially_copyable_v<image_id>);

/// This process's main program as loaded, scanned once.
struct program_image {
  image_id id;
  code_ranges code;            ///< the main program's executable segments
  bool code_complete = true;   ///< false if they did not fit `code` (never seen)
  bool anchor_in_exe = false;  ///< image_anchor's code is mapped from /proc/self/exe
};
const program_image& own_image();

/// The build id in hex, or a hash of the executable's bytes when it has none
/// (linked with --build-id=none): what mpi_pool's ranks compare.
const std::string& build_id_text();

/// Same build, same link, same file: the spawn path's check.
bool same_image(const image_id& a, const image_id& b) noexcept;

/// Whether `p` lies in the main program's executable code: only there does a
/// code offset name the same instruction in every exec of the build.
inline bool in_main_program(const void* p) {
  return own_image().code.contains(p);
}

}  // namespace coproc::detail
