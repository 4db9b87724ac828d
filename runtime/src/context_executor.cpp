#include "coproc/runtime/detail/context_executor.hpp"

#include <asio/io_context.hpp>

namespace coproc::detail {

asio::any_io_executor context_executor(asio::io_context& ctx) {
  return asio::any_io_executor(ctx.get_executor());
}

}  // namespace coproc::detail
