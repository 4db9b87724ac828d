#pragma once
/// Everything coproc offers, in namespace coproc.

#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/mapped_region.hpp"
#include "coproc/runtime/unique_fd.hpp"
#include "coproc/runtime/uring_service.hpp"
#include "coproc/runtime/pipe_writer.hpp"
#include "coproc/runtime/pipe_reader.hpp"
#include "coproc/runtime/futex_waiter.hpp"
#include "coproc/runtime/exit_status.hpp"
#include "coproc/runtime/child_process.hpp"
#include "coproc/executors/pool_options.hpp"
#include "coproc/executors/pool_stats.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/ipc/shm_ring.hpp"
#include "coproc/ipc/queue.hpp"
