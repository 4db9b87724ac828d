#pragma once
// Between the zygote's two starts: zygote.cpp (fork, and the zygote's
// service loop) and zygote_spawn.cpp (posix_spawn of /proc/self/exe and the
// exec'd image's entry). Private to executors/src.

#include <signal.h>
#include <sys/types.h>

#include "coproc/executors/detail/zygote.hpp"

namespace coproc::detail {

/// Dies with the parent (`sig` when it dies), or leaves now if it already did.
void die_with_parent_or_leave(pid_t parent, int sig = SIGKILL);

/// The zygote's life once it is a process of its own (forked, or exec'd and
/// configured): only its pipes and the doorbell stay open. `bad_image`: an
/// exec'd zygote whose code differs from the parent's; its workers leave at
/// once with worker_exit_bad_image.
[[noreturn]] void serve(const worker_config& config, int cmd_read, int report_write,
                        bool bad_image);

/// start_method::spawn: posix_spawns the zygote; returns its pid. Throws as
/// fork_zygote says.
pid_t spawn_zygote(const worker_config& config, int cmd_read, int report_write);

}  // namespace coproc::detail
