// Out-of-line throws for the codec: keeps the hot inline paths small.

#include "coproc/ipc/codec.hpp"

namespace coproc::detail {

void throw_frame_corrupt() {
  throw std::system_error(make_error_code(errc::frame_corrupt));
}

void throw_buffer_too_small() {
  throw std::system_error(make_error_code(errc::frame_too_large),
                          "encode: the output buffer is smaller than the encoded values");
}

}  // namespace coproc::detail
