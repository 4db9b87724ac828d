#pragma once
// How many CPUs this process may run on: the default worker count of a pool.

#include <cstddef>

namespace coproc::detail {

/// The CPUs in this process's affinity mask (a container's cpuset, taskset,
/// mpirun's binding), at least 1; std::thread::hardware_concurrency() counts
/// the host's CPUs instead, and would oversubscribe a container.
std::size_t usable_cpus() noexcept;

}  // namespace coproc::detail
