#pragma once
// The type-erased executor of an io_context, for the constructors that accept
// an `asio::io_context&` as Asio's own I/O objects do.
//
// Converting `io_context::executor_type` to `asio::any_io_executor` instantiates
// the whole property machinery of any_executor (about 0.2 s of compile time);
// doing it once here, out of line, keeps that cost out of every includer of a
// public header (issue 14, item 9).

#include <asio/any_io_executor.hpp>

namespace asio {
class io_context;
}

namespace coproc::detail {

/// `asio::any_io_executor(ctx.get_executor())`, compiled once in the library.
asio::any_io_executor context_executor(asio::io_context& ctx);

}  // namespace coproc::detail
