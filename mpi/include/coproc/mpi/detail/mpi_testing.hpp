#pragma once
// Test hooks of mpi_pool, kept out of the public header (tests/mpi/mpi_pool_check.cpp).

#include <string>

namespace coproc::detail {

/// The build id rank 0 announces (empty: the real one).
void mpi_set_build_id_for_testing(std::string id);

}  // namespace coproc::detail
