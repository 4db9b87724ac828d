// libFuzzer target: decode representative types from arbitrary bytes. A decode may only
// succeed or throw std::system_error(coproc::errc::frame_corrupt); anything else (a crash,
// a sanitizer report, another exception, a huge allocation) is a bug.
//
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCOPROC_BUILD_FUZZ=ON
//   cmake --build build-fuzz --target codec_fuzz && build-fuzz/fuzz/codec_fuzz -max_total_time=20

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/remote_error.hpp"

namespace {

enum class shade : std::uint8_t { dark, light };

struct record {
  std::string name;
  std::vector<double> samples;
  std::optional<std::map<int, std::string>> notes;
  bool flag = false;
  std::variant<int, std::string> tag;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, samples, notes, flag, tag);
  }
};

using nested = std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>;
using mixed = std::tuple<std::vector<bool>, std::set<std::string>, std::unordered_map<int, int>,
                         std::variant<std::monostate, std::int64_t, std::vector<std::string>>,
                         std::array<std::optional<shade>, 3>, std::chrono::microseconds>;

template <class T>
void try_decode(std::span<const std::byte> in) {
  try {
    (void)coproc::decode_from<T>(in);
  } catch (const std::system_error& e) {
    if (e.code() != coproc::errc::frame_corrupt) {
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  // The first byte picks the type, so the fuzzer can learn each one's shape.
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0:
      try_decode<nested>(in);
      break;
    case 1:
      try_decode<mixed>(in);
      break;
    case 2:
      try_decode<record>(in);
      break;
    case 3:
      try_decode<std::vector<record>>(in);
      break;
    case 4:
      try_decode<coproc::remote_error>(in);
      break;
    case 5:
      try_decode<std::vector<std::string>>(in);
      break;
    case 6:
      try_decode<std::variant<bool, std::u16string, std::vector<bool>>>(in);
      break;
    default: {
      // Several values through one decoder, as a task frame would hold them.
      try {
        coproc::decoder d(in);
        (void)d.decode<std::uint32_t>();
        (void)d.decode<std::string>();
        (void)d.decode<std::vector<std::int32_t>>();
        (void)d.decode<std::optional<record>>();
      } catch (const std::system_error& e) {
        if (e.code() != coproc::errc::frame_corrupt) {
          std::abort();
        }
      }
      break;
    }
  }
  return 0;
}
