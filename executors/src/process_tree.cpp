#include "process_tree.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>

namespace coproc::detail {

std::vector<pid_t> own_children() {
  std::vector<pid_t> out;
  std::ifstream in("/proc/self/task/" + std::to_string(::getpid()) + "/children");
  for (long pid = 0; in >> pid;) {
    out.push_back(static_cast<pid_t>(pid));
  }
  return out;
}

void kill_children_but(const std::vector<pid_t>& keep) {
  for (pid_t child : own_children()) {
    if (std::find(keep.begin(), keep.end(), child) == keep.end()) {
      // Its group first: the pid names a group only if the child made one,
      // and cannot be reused while the child is unreaped.
      ::kill(-child, SIGKILL);
      ::kill(child, SIGKILL);
    }
  }
}

// The host's io_uring rings are shared with the kernel and the host: a task
// writing there would corrupt the host's completions. The memfds of the
// host's other pools hold other workers' rings. The host's own shared memory
// (segments, queues it made for its tasks) stays.
void drop_foreign_shared_mappings(const worker_config& config) {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> drop;
  {
    std::ifstream maps("/proc/self/maps");
    const auto own = reinterpret_cast<std::uintptr_t>(config.base);
    for (std::string line; std::getline(maps, line);) {
      unsigned long begin = 0, end = 0;
      if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) {
        continue;
      }
      bool ring = line.find("anon_inode:[io_uring]") != std::string::npos;
      bool other_pool = line.find("memfd:coproc-pool") != std::string::npos && begin != own;
      if (ring || other_pool) {
        drop.emplace_back(begin, end);
      }
    }
  }
  for (const auto& [begin, end] : drop) {
    ::munmap(reinterpret_cast<void*>(begin), end - begin);
  }
}

}  // namespace coproc::detail
