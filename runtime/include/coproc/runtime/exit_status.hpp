#pragma once
/// coproc::exit_status: how a child process ended.

#include <string>

namespace coproc {

/// How a reaped child ended, with its peak memory use.
struct exit_status {
  bool exited = false;       ///< true: left through exit/_exit (see code)
  int code = 0;              ///< the exit status when exited
  int signal = 0;            ///< the terminating signal when !exited
  bool core_dumped = false;  ///< the signal produced a core dump
  long max_rss_kb = 0;       ///< peak resident set size (rusage ru_maxrss), in KiB

  /// True for exit status 0.
  bool success() const noexcept { return exited && code == 0; }

  /// "exited with status 3", "killed by signal 9 (SIGKILL)",
  /// "killed by signal 11 (SIGSEGV), core dumped".
  std::string describe() const;
};

}  // namespace coproc
