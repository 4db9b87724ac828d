// Codec throughput: encode + decode of a 64 MiB std::vector<double> against one memcpy of
// the same bytes. The target is about 2x (one copy each way). Prints one line per figure;
// times are medians of 15 runs.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "coproc/ipc/codec.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

template <class F>
double median_seconds(F&& f, int runs = 15) {
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const auto start = clock_type::now();
    f();
    t.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

volatile double sink;

}  // namespace

int main() {
  constexpr std::size_t count = (64U << 20) / sizeof(double);
  constexpr double mib = 64.0;
  std::vector<double> values(count);
  for (std::size_t i = 0; i < count; ++i) {
    values[i] = static_cast<double>(i) * 0.25;
  }
  std::vector<std::byte> frame(coproc::encoded_size(values));
  std::vector<std::byte> copy(count * sizeof(double));
  std::memset(copy.data(), 1, copy.size());  // fault the pages in once

  const double memcpy_warm = median_seconds([&] {
    std::memcpy(copy.data(), values.data(), copy.size());
    sink = static_cast<double>(copy[12345]);
  });
  const double memcpy_fresh = median_seconds([&] {
    std::vector<double> fresh(values.begin(), values.end());  // a new allocation + copy
    sink = fresh[12345];
  });
  const double encode = median_seconds([&] {
    coproc::encode(std::span<std::byte>(frame), values);
    sink = static_cast<double>(frame[12345]);
  });
  const double decode = median_seconds([&] {
    auto out = coproc::decode_from<std::vector<double>>(frame);
    sink = out[12345];
  });
  // The same vector after a bool: its block sits at an odd offset (the unaligned path).
  std::vector<std::byte> odd_frame(coproc::encoded_size(true, values));
  coproc::encode(std::span<std::byte>(odd_frame), true, values);
  const double decode_unaligned = median_seconds([&] {
    coproc::decoder d(odd_frame);
    (void)d.decode<bool>();
    auto out = d.decode<std::vector<double>>();
    sink = out[12345];
  });
  const double to_vector = median_seconds([&] {
    auto v = coproc::encode_to_vector(values);
    sink = static_cast<double>(v[12345]);
  });

  auto line = [&](const char* name, double s) {
    std::printf("%-42s %8.2f ms  %6.2f GB/s  %5.2fx memcpy\n", name, s * 1e3,
                mib * 1048576.0 / s / 1e9, s / memcpy_warm);
  };
  std::printf("codec: 64 MiB std::vector<double>, median of 15\n");
  line("memcpy into a warm buffer", memcpy_warm);
  line("copy into a new std::vector<double>", memcpy_fresh);
  line("encode into a warm buffer", encode);
  line("decode_from (new vector, aligned)", decode);
  line("decode (new vector, unaligned block)", decode_unaligned);
  line("encode_to_vector (new buffer, zeroed)", to_vector);
  line("encode + decode", encode + decode);
  std::printf("ratio encode+decode / memcpy (warm): %.2f\n", (encode + decode) / memcpy_warm);
  std::printf("ratio encode+decode / (memcpy warm + new-vector copy): %.2f\n",
              (encode + decode) / (memcpy_warm + memcpy_fresh));
}
