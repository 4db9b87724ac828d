#pragma once
// The futex wait as an io operation: its SQE for the ring, its plan for the
// epoll backend (the futex watcher) and its result (coproc::async_futex_wait).

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <system_error>
#include <tuple>

#include "coproc/runtime/detail/io_op.hpp"
#include "coproc/runtime/detail/pipe_io.hpp"
#include "coproc/runtime/detail/uring_ops.hpp"

namespace coproc {
namespace detail {

struct futex_wait_impl {
  static constexpr bool waits_on_futex = true;

  futex_wait_impl(std::atomic<std::uint32_t>& w, std::uint32_t e) noexcept
      : word(&w), expected(e) {}
  io_uring_sqe prepare() noexcept {
    io_uring_sqe sqe{};
    prep_futex_wait(&sqe, word, expected);
    return sqe;
  }
  reactor_plan plan() const { return reactor_plan::futex(*word, expected); }
  int attempt() noexcept { return -EAGAIN; }  // never called: the watcher waits
  std::tuple<std::error_code> result(int res, bool cancel_requested) const noexcept {
    // -EAGAIN: the word no longer held `expected` when the kernel looked: that
    // is a wake-up too (the caller re-checks the word either way).
    if (res >= 0 || res == -EAGAIN) {
      return {std::error_code()};
    }
    return {uring_error(res, cancel_requested)};
  }
  std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
};

}  // namespace detail

}  // namespace coproc
