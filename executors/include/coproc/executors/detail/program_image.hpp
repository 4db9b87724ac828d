#pragma once
// The main program as loaded: its executable segments and its GNU build id.
// Both exec-based identities read it: the spawn start method (zygote.cpp)
// and mpi_pool's ranks (mpi/src/image.cpp).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace coproc::detail {

struct program_image {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>>
      code;                      ///< executable segments [begin, end)
  std::string build_id;          ///< the GNU build-id note's raw bytes; empty without one
  std::uintptr_t load_bias = 0;  ///< the main program's load address (dlpi_addr)
};

/// Reads the main program's program headers (dl_iterate_phdr's first object).
program_image scan_program_image();

}  // namespace coproc::detail
