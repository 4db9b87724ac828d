#pragma once
/// coproc::process_pool: co_await functions run by a pool of forked worker processes.

#include <asio/any_io_executor.hpp>
#include <asio/io_context.hpp>
#include <utility>

#include "coproc/executors/basic_pool.hpp"
#include "coproc/executors/detail/local_backend.hpp"
#include "coproc/executors/pool_options.hpp"
#include "coproc/runtime/detail/context_executor.hpp"

namespace coproc {

/// A pool of worker processes forked from a zygote, fed through shared-memory
/// rings. Create it early in main(), before the host starts threads: the
/// zygote is forked in the constructor, and forking a process that runs other
/// threads copies only the calling thread (a lock another thread held stays
/// locked in the zygote). Workers are forked from the single-threaded zygote,
/// so respawns stay safe later.
///
/// Create the pool after daemonizing (after the fork() whose parent exits):
/// the zygote and the workers belong to the process that created the pool,
/// and die with it. In any other process (a plain fork() child, the parent
/// half of a daemonizing fork) the destructor only closes the pool's fds and
/// unmaps its memory: it stops, kills and waits for nothing, so the creator's
/// pool keeps running. A forked child must not submit to its parent's pool.
///
/// What a task can do to its own process stays there: a crash, closing
/// every fd, `kill(0, sig)` (workers lead their own process group), clearing
/// the death signal, forking children that linger (they end with their
/// worker), writing over the pool's shared memory (the parent checks every
/// word it reads there and replaces that worker, failing its task with
/// errc::frame_corrupt). No write of the pool raises SIGPIPE in the host.
///
/// The members (submit, async_submit, submit_for, map, map_unordered,
/// async_shutdown, stats, size) are basic_pool's, documented there. Here a
/// cancelled or timed-out running task's worker is killed and replaced (with
/// pool_options::stop_grace, only after the task was asked to stop and did
/// not return within the grace); map_unordered submits its first window at once.
///
/// Thread safety: every member function may be called from any thread (the
/// pool serialises them with a mutex). The pool must outlive the operations it
/// started; destroying it completes them with asio::error::operation_aborted.
/// The io_context behind the executor may be destroyed before the pool: its
/// destruction stops the pool's workers and zygote and destroys the handlers
/// of pending operations uncalled (as Asio destroys the handlers still queued
/// in a context that goes away); the pool's destructor then touches nothing
/// of the context. Use the pool no more after that.
class process_pool : public basic_pool<detail::local_backend> {
 public:
  /// Forks the zygote and starts `options.workers` workers.
  /// Throws std::system_error naming the failing system call, and
  /// std::invalid_argument for `options.workers == 0`.
  process_pool(const executor_type& ex, pool_options options = {})
      : basic_pool(ex, std::move(options)) {}
  /// The same on `ctx`'s executor, as Asio's own I/O objects accept either.
  explicit process_pool(asio::io_context& ctx, pool_options options = {})
      : process_pool(detail::context_executor(ctx), std::move(options)) {}
  /// Kills every worker and the zygote and reaps them; operations still
  /// pending complete with asio::error::operation_aborted.
  ~process_pool() = default;
};

}  // namespace coproc
