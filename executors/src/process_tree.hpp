#pragma once
// What the zygote does to keep its process tree and its memory its own:
// end what a dead worker left behind, and let go of the host's mappings
// that no task may reach.

#include <sys/types.h>

#include <vector>

#include "coproc/executors/detail/zygote.hpp"

namespace coproc::detail {

/// The children of this (single-threaded) process, from /proc.
std::vector<pid_t> own_children();

/// SIGKILLs every child of this process that is not in `keep`, with its
/// process group when it leads one (a grandchild that called setsid). In a
/// subreaper these are orphans of dead descendants.
void kill_children_but(const std::vector<pid_t>& keep);

/// Unmaps the host's shared mappings no task may reach: its io_uring rings
/// and the memfds of its other pools (all but `config.base`'s).
void drop_foreign_shared_mappings(const worker_config& config);

}  // namespace coproc::detail
