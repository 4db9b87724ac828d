#pragma once
// The completion half of every coproc I/O operation, on either backend: owns
// the handler, a work guard on the handler's associated executor, the
// op-specific state (Impl), and the connection to the handler's cancellation
// slot.
//
// Impl requirements:
//   io_uring_sqe prepare();      // ring: called once the op has its final address
//   reactor_plan plan();         // reactor: what to wait for
//   int attempt();               // reactor: try without blocking (-EAGAIN: wait)
//   std::tuple<std::error_code, ...> result(int res, bool cancel_requested);

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/executor_work_guard.hpp>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "coproc/runtime/detail/io_op.hpp"
#include "coproc/runtime/uring_service.hpp"

namespace coproc::detail {

template <class Handler, class Impl>
class io_handler_op final : public io_op {
 public:
  using executor_type = asio::associated_executor_t<Handler, asio::any_io_executor>;

  template <class H, class... Args>
  io_handler_op(uring_service& service, const asio::any_io_executor& io_ex, H&& handler,
                Args&&... args)
      : service_(service),
        handler_(std::forward<H>(handler)),
        work_(asio::make_work_guard(asio::get_associated_executor(handler_, io_ex))),
        impl(std::forward<Args>(args)...) {
    if constexpr (requires { Impl::waits_on_futex; }) {
      waits_on_futex = Impl::waits_on_futex;
    }
  }

  /// Connects the handler's cancellation slot (if any) to the service.
  void connect_cancellation() {
    slot_ = asio::get_associated_cancellation_slot(handler_);
    if (slot_.is_connected()) {
      slot_.template emplace<cancel_handler>(service_, this);
    }
  }

  io_uring_sqe prepare() noexcept override { return impl.prepare(); }
  reactor_plan plan() override { return impl.plan(); }
  int attempt() noexcept override { return impl.attempt(); }

  void complete(bool invoke) noexcept override {
    std::unique_ptr<io_handler_op> self(this);
    if (slot_.is_connected()) {
      slot_.clear();
    }
    if (!invoke) {
      return;  // service shutdown: the handler is destroyed, never called
    }
    auto args = impl.result(res, cancel_requested);
    Handler handler(std::move(handler_));
    auto work = std::move(work_);
    self.reset();  // free the op before the upcall, as Asio does
    executor_type ex = work.get_executor();
    asio::dispatch(ex, [h = std::move(handler), a = std::move(args)]() mutable {
      std::apply(std::move(h), std::move(a));
    });
    work.reset();
  }

 private:
  struct cancel_handler {
    // A constructor, not an aggregate: clang 14 cannot build an aggregate
    // from the parenthesised arguments that slot.emplace passes.
    cancel_handler(uring_service& s, io_op* o) noexcept : service(s), op(o) {}
    uring_service& service;
    io_op* op;
    void operator()(asio::cancellation_type type) const noexcept {
      if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                   asio::cancellation_type::total)) != asio::cancellation_type::none) {
        service.cancel(op);
      }
    }
  };

  uring_service& service_;
  Handler handler_;
  asio::executor_work_guard<executor_type> work_;
  asio::cancellation_slot slot_;

 public:
  Impl impl;  ///< op-specific state; its address is stable until completion
};

/// Creates the op for `handler` and starts it on `service` (its SQE queued on
/// the ring, or its first attempt posted on the reactor backend).
template <class Impl, class Handler, class... Args>
void launch_io_op(uring_service& service, const asio::any_io_executor& io_ex, Handler&& handler,
                  Args&&... args) {
  using op_type = io_handler_op<std::decay_t<Handler>, Impl>;
  auto op = std::make_unique<op_type>(service, io_ex, std::forward<Handler>(handler),
                                      std::forward<Args>(args)...);
  op->connect_cancellation();
  service.start(op.release());
}

}  // namespace coproc::detail
