#pragma once
// The one asynchronous shape behind every coproc sync primitive: try a step
// on shared atomics; if it cannot finish, wait (without blocking the loop
// thread) until a futex word changes, then try again.
//
// The wait is coproc::async_futex_wait (io_uring FUTEX_WAIT on the runtime's
// uring_service, or its futex watcher thread where the ring lacks it or the
// service runs on epoll, unless the word comes with a futex_doorbell).

#include <asio/associated_cancellation_slot.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>

#include "coproc/runtime/futex_waiter.hpp"

namespace coproc::detail {

/// What a machine's step() decided: finished with `ec`, or wait on `word`
/// while it still holds `expected` (through `bell` when its wakers ring one).
struct futex_step {
  bool done = false;
  std::error_code ec;
  std::atomic<std::uint32_t>* word = nullptr;
  std::uint32_t expected = 0;
  const futex_doorbell* bell = nullptr;
  std::atomic<std::uint32_t>* listeners = nullptr;

  static futex_step finish(std::error_code e = {}) { return {true, e, nullptr, 0}; }
  static futex_step wait(std::atomic<std::uint32_t>& w, std::uint32_t v) {
    return {false, {}, &w, v};
  }
  static futex_step wait(std::atomic<std::uint32_t>& w, std::uint32_t v, const futex_doorbell& b,
                         std::atomic<std::uint32_t>& l) {
    return {false, {}, &w, v, &b, &l};
  }
};

/// Completes with void(std::error_code) once the step's word may differ from
/// its expected value (spurious completions allowed), or with
/// operation_aborted on cancellation.
template <class Executor, class Token>
auto async_word_wait(const Executor& ex, const futex_step& s, Token&& token) {
  if (s.bell != nullptr) {
    return coproc::async_futex_wait(asio::any_io_executor(ex), *s.word, s.expected, *s.bell,
                                    *s.listeners, std::forward<Token>(token));
  }
  return coproc::async_futex_wait(asio::any_io_executor(ex), *s.word, s.expected,
                                  std::forward<Token>(token));
}

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
      async_word_wait(ex, s, std::move(self));
    } else {
      // A phase that must finish even after cancellation (a condition's
      // re-acquisition of its lock) waits with no cancellation slot.
      async_word_wait(ex, s,
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
requires requires(Machine& m) {
  m.value();
}
struct futex_loop_signature<Machine> {
  using type = void(std::error_code, decltype(std::declval<Machine&>().value()));
};

template <class Machine, class Token>
auto async_futex_loop(Machine m, Token&& token) {
  return asio::async_compose<Token, typename futex_loop_signature<Machine>::type>(
      futex_loop_op<Machine>(std::move(m)), token);
}

}  // namespace coproc::detail
