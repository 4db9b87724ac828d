#include "coproc/runtime/exit_status.hpp"

#include <string.h>

namespace coproc {

std::string exit_status::describe() const {
  if (exited) {
    return "exited with status " + std::to_string(code);
  }
  std::string text = "killed by signal " + std::to_string(signal);
  if (const char* abbrev = ::sigabbrev_np(signal)) {
    text += " (SIG";
    text += abbrev;
    text += ")";
  }
  if (core_dumped) {
    text += ", core dumped";
  }
  return text;
}

}  // namespace coproc
