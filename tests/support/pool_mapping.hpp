#pragma once
// Where a process pool's shared mapping lies in this process (the parent, or
// a worker: it inherits the mapping at the same address), for tests whose
// tasks play a hostile worker that writes over it.

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <utility>

namespace coproc::test {

/// The pool's mapping (base and length), from /proc/self/maps; {nullptr, 0}
/// when there is none.
inline std::pair<std::byte*, std::size_t> pool_mapping() {
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps == nullptr) {
    return {nullptr, 0};
  }
  char line[512];
  std::pair<std::byte*, std::size_t> out{nullptr, 0};
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long begin = 0, end = 0;
    if (std::strstr(line, "memfd:coproc-pool") != nullptr &&
        std::sscanf(line, "%lx-%lx", &begin, &end) == 2) {
      out = {reinterpret_cast<std::byte*>(begin), end - begin};
      break;
    }
  }
  std::fclose(maps);
  return out;
}

}  // namespace coproc::test
