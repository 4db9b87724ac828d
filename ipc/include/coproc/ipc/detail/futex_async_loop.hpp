#pragma once
// The one asynchronous shape behind every coproc sync primitive: try a step
// on shared atomics; if it cannot finish, wait (without blocking the loop
// thread) until a futex word changes, then try again.
//
// The wait is coproc::async_futex_wait (io_uring FUTEX_WAIT, runtime module).
// While that header is absent from the tree, a bounded polling wait on an
// asio::steady_timer stands in for it (never blocking the loop either).

#include <asio/associated_cancellation_slot.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>

#if __has_include("coproc/runtime/futex_waiter.hpp") && !defined(COPROC_IPC_POLL_FUTEX)
#include "coproc/runtime/futex_waiter.hpp"
#define COPROC_IPC_HAVE_ASYNC_FUTEX 1
#else
#define COPROC_IPC_HAVE_ASYNC_FUTEX 0
#endif

namespace coproc::detail {

#if !COPROC_IPC_HAVE_ASYNC_FUTEX
/// Stand-in for coproc::async_futex_wait: polls the word on a timer with
/// exponential back-off (20 us up to 2 ms). Completes with success once the
/// word differs from `expected`; honours cancellation through the timer.
struct poll_word_op {
  std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
  std::unique_ptr<asio::steady_timer> timer;
  std::chrono::microseconds delay{20};

  template <class Self>
  void operator()(Self& self, std::error_code ec = {}) {
    if (ec) {
      self.complete(ec);
      return;
    }
    if (!timer) {
      timer = std::make_unique<asio::steady_timer>(self.get_executor());
    } else if (word->load(std::memory_order_acquire) != expected) {
      self.complete(std::error_code{});
      return;
    } else {
      delay = std::min(delay * 2, std::chrono::microseconds(2000));
    }
    timer->expires_after(delay);
    timer->async_wait(std::move(self));
  }
};
#endif

/// Completes with void(std::error_code) once `word` may differ from `expected`
/// (spurious completions allowed), or with operation_aborted on cancellation.
template <class Executor, class Token>
auto async_word_wait(const Executor& ex, std::atomic<std::uint32_t>& word, std::uint32_t expected,
                     Token&& token) {
#if COPROC_IPC_HAVE_ASYNC_FUTEX
  return coproc::async_futex_wait(ex, word, expected, std::forward<Token>(token));
#else
  return asio::async_compose<Token, void(std::error_code)>(
      poll_word_op{&word, expected, nullptr}, token, ex);
#endif
}

/// What a machine's step() decided: finished with `ec`, or wait on `word`
/// while it still holds `expected`.
struct futex_step {
  bool done = false;
  std::error_code ec;
  std::atomic<std::uint32_t>* word = nullptr;
  std::uint32_t expected = 0;

  static futex_step finish(std::error_code e = {}) { return {true, e, nullptr, 0}; }
  static futex_step wait(std::atomic<std::uint32_t>& w, std::uint32_t v) { return {false, {}, &w, v}; }
};

/// Drives a Machine { futex_step step(); void after_wait(); bool abandon();
/// bool cancellable() const; [value()] } to completion. after_wait() follows
/// every wait step (completed or not); abandon() runs on cancellation or a
/// wait error so a wake-up the machine may have consumed is passed on; it
/// returns false when the machine must still finish a non-cancellable phase
/// (its last step then reports the outcome). A machine with value() completes
/// with void(std::error_code, decltype(value())).
template <class Machine>
class futex_loop_op {
 public:
  explicit futex_loop_op(Machine m) : m_(std::move(m)) {}

  // Initiation, or re-entry after posting an immediate result.
  template <class Self>
  void operator()(Self& self) {
    if (posted_) {
      complete(self, result_);
      return;
    }
    self.reset_cancellation_state(asio::enable_total_cancellation());
    run(self, true);
  }

  // The futex wait completed.
  template <class Self>
  void operator()(Self& self, std::error_code ec) {
    m_.after_wait();
    bool aborted = ec == asio::error::operation_aborted ||
                   (m_.cancellable() &&
                    self.get_cancellation_state().cancelled() != asio::cancellation_type::none);
    if (aborted && m_.cancellable()) {
      if (m_.abandon()) {
        finish(self, false, asio::error::operation_aborted);
        return;
      }
    } else if (ec && !aborted && ec != std::errc::resource_unavailable_try_again &&
               ec != std::errc::interrupted) {
      m_.abandon();
      finish(self, false, ec);
      return;
    }
    run(self, false);
  }

 private:
  template <class Self>
  void run(Self& self, bool initiating) {
    futex_step s = m_.step();
    if (s.done) {
      finish(self, initiating, s.ec);
      return;
    }
    if (m_.cancellable() &&
        self.get_cancellation_state().cancelled() != asio::cancellation_type::none) {
      m_.after_wait();
      if (m_.abandon()) {
        finish(self, initiating, asio::error::operation_aborted);
        return;
      }
      run(self, initiating);
      return;
    }
    auto ex = self.get_executor();
    if (m_.cancellable()) {
      async_word_wait(ex, *s.word, s.expected, std::move(self));
    } else {
      // A phase that must finish even after cancellation (a condition's
      // re-acquisition of its lock) waits with no cancellation slot.
      async_word_wait(ex, *s.word, s.expected,
                      asio::bind_cancellation_slot(asio::cancellation_slot(), std::move(self)));
    }
  }

  template <class Self>
  void finish(Self& self, bool initiating, std::error_code ec) {
    if (initiating) {
      // Never complete from inside the initiating function.
      posted_ = true;
      result_ = ec;
      asio::post(std::move(self));
      return;
    }
    complete(self, ec);
  }

  template <class Self>
  void complete(Self& self, std::error_code ec) {
    if constexpr (requires { m_.value(); }) {
      self.complete(ec, m_.value());
    } else {
      self.complete(ec);
    }
  }

  Machine m_;
  bool posted_ = false;
  std::error_code result_;
};

/// Starts a futex_loop_op with the handler's associated executor (for
/// asio::use_awaitable: the coroutine's executor).
template <class Machine>
struct futex_loop_signature {
  using type = void(std::error_code);
};
template <class Machine>
  requires requires(Machine& m) { m.value(); }
struct futex_loop_signature<Machine> {
  using type = void(std::error_code, decltype(std::declval<Machine&>().value()));
};

template <class Machine, class Token>
auto async_futex_loop(Machine m, Token&& token) {
  return asio::async_compose<Token, typename futex_loop_signature<Machine>::type>(
      futex_loop_op<Machine>(std::move(m)), token);
}

}  // namespace coproc::detail
