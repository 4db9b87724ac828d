#pragma once
// A process's state and parent from /proc/PID/stat, for tests that count or
// follow processes.

#include <sys/types.h>

#include <fstream>
#include <sstream>
#include <string>

namespace coproc::test {

/// State and parent of a process from /proc/PID/stat; state is empty when it is gone.
struct proc_stat {
  std::string state;
  pid_t ppid = 0;
};

inline proc_stat read_stat(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) {
    return {};
  }
  // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) {
    return {};
  }
  std::istringstream rest(line.substr(close + 2));
  proc_stat out;
  rest >> out.state >> out.ppid;
  return out;
}

/// Gone, or a zombie (which runs nothing and holds no memory).
inline bool gone_or_zombie(pid_t pid) {
  proc_stat s = read_stat(pid);
  return s.state.empty() || s.state == "Z";
}

}  // namespace coproc::test
