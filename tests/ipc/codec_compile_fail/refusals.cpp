// Compiled by ctest (tests/CMakeLists.txt) once per COPROC_CASE: each case must fail to
// compile with the codec's own message; the "accepted" case must compile.
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "coproc/ipc/codec.hpp"

struct holder {
  std::string s;  // not trivially copyable, no serialize()
};
struct pod {
  int x;
};

void use() {
  std::vector<std::byte> buf(64);
#if COPROC_CASE == 0  // accepted
  int x = 1;
  coproc::encode(std::span<std::byte>(buf), x, std::string("s"));
  (void)coproc::decode_from<int>(buf);
#elif COPROC_CASE == 1  // raw pointer
  int x = 1;
  int* p = &x;
  (void)coproc::encoded_size(p);
#elif COPROC_CASE == 2  // span
  int a[2] = {1, 2};
  coproc::encode(std::span<std::byte>(buf), std::span<int>(a));
#elif COPROC_CASE == 3  // string_view
  (void)coproc::encode_to_vector(std::string_view("x"));
#elif COPROC_CASE == 4  // no serialize
  (void)coproc::encode_to_vector(holder{});
#elif COPROC_CASE == 5  // a pointer nested in a container, on decode
  coproc::decoder d(buf);
  (void)d.decode<std::vector<const char*> >();
#elif COPROC_CASE == 6  // a reference, on decode
  coproc::decoder d(buf);
  (void)d.decode<int&>();
#elif COPROC_CASE == 7  // member pointer
  (void)coproc::encode_to_vector(&pod::x);
#endif
}
