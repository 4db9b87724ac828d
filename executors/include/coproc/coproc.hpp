#pragma once
/// Everything coproc offers, in namespace coproc.

#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/mapped_region.hpp"
#include "coproc/runtime/unique_fd.hpp"
