#pragma once
// The exception an awaitable ended with, as a value: a test can then look at
// it outside the catch block (no co_await may appear in a handler, and GCC 12
// wants none inside a Catch2 macro). Plain Asio: no test framework.

#include <asio/awaitable.hpp>
#include <exception>
#include <utility>

namespace coproc::test {

/// Runs `awaitable` and returns the std::exception_ptr it ended with (null
/// when it succeeded).
template <class A>
asio::awaitable<std::exception_ptr> failure_of(A awaitable) {
  try {
    co_await std::move(awaitable);
  } catch (...) {
    co_return std::current_exception();
  }
  co_return nullptr;
}

}  // namespace coproc::test
