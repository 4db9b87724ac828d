#pragma once
// Runs an asio::awaitable test body on a fresh io_context with a deadline,
// so that no test can hang: a body still running at the deadline fails.

#include <asio.hpp>
#include <chrono>
#include <exception>
#include <stdexcept>

namespace coproc::test {

/// Runs `body(ctx)` (a function returning asio::awaitable<void>) to completion
/// and rethrows its exception; throws std::runtime_error past `deadline`.
template <class Body>
void run_async(Body body, std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
  asio::io_context ctx;
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(ctx, body(ctx), [&](std::exception_ptr e) {
    error = e;
    done = true;
  });
  ctx.run_for(deadline);
  if (!done) {
    throw std::runtime_error("async test body did not finish before its deadline");
  }
  if (error) {
    std::rethrow_exception(error);
  }
}

}  // namespace coproc::test
