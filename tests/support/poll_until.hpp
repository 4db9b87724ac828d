#pragma once
// Waits on the calling coroutine's loop for a state the code under test
// reaches on its own (a reply that comes later, a pool that goes to rest),
// observed rather than assumed after a delay. Plain Asio: no test framework.

#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>

namespace coproc::test {

/// Returns once `done()` is true, or after `tries` looks `step` apart (the
/// caller then checks the state itself, and fails).
template <class Done>
asio::awaitable<void> poll_until(Done done, std::chrono::milliseconds step, int tries) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  for (int i = 0; i < tries && !done(); ++i) {
    t.expires_after(step);
    co_await t.async_wait(asio::use_awaitable);
  }
}

}  // namespace coproc::test
