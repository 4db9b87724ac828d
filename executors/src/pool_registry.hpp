#pragma once
// The pools that run on one execution context, kept by a service of that
// context so that its destruction can tear them down while it still exists.
// Without it, an io_context destroyed before a pool left the pool's timers,
// descriptors and handlers' work guards pointing into freed memory, and
// ~process_pool crashed on them (issue 14 item 5). Private to executors/src.

#include <asio/execution_context.hpp>
#include <memory>
#include <mutex>
#include <vector>

namespace coproc::detail {

class pool_core;

class pool_registry final : public asio::execution_context::service {
 public:
  static inline asio::execution_context::id id;

  explicit pool_registry(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

  /// Registers a pool; a pool destroyed first just leaves an expired entry.
  void add(const std::shared_ptr<pool_core>& core);

 private:
  /// Run by the context's destructor before its scheduler and reactor go:
  /// each live pool closes, dropping its pending completions uncalled.
  void shutdown() override;

  std::mutex mutex_;
  std::vector<std::weak_ptr<pool_core>> cores_;
};

}  // namespace coproc::detail
