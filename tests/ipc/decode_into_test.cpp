// detail::decode_into: a whole frame decoded into an existing value, whose
// storage a block-copied container keeps when it is large enough.
#include "coproc/ipc/detail/decode_into.hpp"

#include <catch2/catch_test_macros.hpp>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "coproc/runtime/errc.hpp"

namespace {

std::vector<double> doubles(std::size_t n) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = static_cast<double>(i) + 0.25;
  }
  return v;
}

/// Whether decode_into(frame, out) throws frame_corrupt.
bool refused(std::span<const std::byte> frame, std::vector<double>& out) {
  try {
    coproc::detail::decode_into(frame, out);
  } catch (const std::system_error& e) {
    return e.code() == coproc::errc::frame_corrupt;
  }
  return false;
}

}  // namespace

TEST_CASE("decode_into keeps a vector's storage when it holds the elements", "[codec]") {
  const std::vector<std::byte> frame = coproc::encode_to_vector(doubles(1000));
  std::vector<double> out(2000, -1.0);
  const double* storage = out.data();
  coproc::detail::decode_into(frame, out);
  CHECK(out == doubles(1000));
  CHECK(out.data() == storage);
  CHECK(out.capacity() == 2000);
}

TEST_CASE("decode_into does not keep a large storage for a small value", "[codec]") {
  const std::vector<std::byte> frame = coproc::encode_to_vector(doubles(3));
  std::vector<double> out(std::size_t{1} << 20, 1.0);  // 8 MiB
  coproc::detail::decode_into(frame, out);
  CHECK(out == doubles(3));
  CHECK(out.capacity() < 1024);
}

TEST_CASE("decode_into allocates when the capacity is short", "[codec]") {
  const std::vector<std::byte> frame = coproc::encode_to_vector(doubles(5000));
  std::vector<double> out(3, 1.0);
  coproc::detail::decode_into(frame, out);
  CHECK(out == doubles(5000));
}

TEST_CASE("decode_into reads empty, odd-sized and misaligned blocks", "[codec]") {
  std::vector<double> out = doubles(10);
  coproc::detail::decode_into(coproc::encode_to_vector(std::vector<double>{}), out);
  CHECK(out.empty());
  // One byte in front: the doubles lie misaligned in the frame.
  std::vector<std::byte> shifted(1);
  const std::vector<std::byte> frame = coproc::encode_to_vector(doubles(7));
  shifted.insert(shifted.end(), frame.begin(), frame.end());
  out.reserve(64);
  const double* storage = out.data();
  coproc::detail::decode_into(std::span<const std::byte>(shifted).subspan(1), out);
  CHECK(out == doubles(7));
  CHECK(out.data() == storage);
}

TEST_CASE("decode_into keeps a string's storage", "[codec]") {
  std::string out(200, 'z');
  const char* storage = out.data();
  coproc::detail::decode_into(coproc::encode_to_vector(std::string(150, 'q')), out);
  CHECK(out == std::string(150, 'q'));
  CHECK(out.data() == storage);
}

TEST_CASE("decode_into refuses truncated or trailing bytes", "[codec]") {
  std::vector<std::byte> frame = coproc::encode_to_vector(doubles(4));
  std::vector<double> out(8);
  std::vector<std::byte> truncated(frame.begin(), frame.end() - 1);
  CHECK(refused(truncated, out));
  frame.push_back(std::byte{0});
  CHECK(refused(frame, out));
}

TEST_CASE("decode_into assigns types it cannot reuse the storage of", "[codec]") {
  const std::map<int, std::string> m{{1, "one"}, {2, "two"}};
  std::map<int, std::string> out{{3, "three"}};
  coproc::detail::decode_into(coproc::encode_to_vector(m), out);
  CHECK(out == m);
}
