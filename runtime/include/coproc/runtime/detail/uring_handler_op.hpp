#pragma once
// The completion half of every ring operation: owns the handler, a work guard
// on the handler's associated executor, the op-specific state (Impl), and the
// connection to the handler's cancellation slot.
//
// Impl requirements:
//   io_uring_sqe prepare();                       // called once the op has its final address
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

#include "coproc/runtime/uring_service.hpp"

namespace coproc::detail {

template <class Handler, class Impl>
class uring_handler_op final : public uring_op {
 public:
  using executor_type = asio::associated_executor_t<Handler, asio::any_io_executor>;

  template <class H, class... Args>
  uring_handler_op(uring_service& service, const asio::any_io_executor& io_ex, H&& handler,
                   Args&&... args)
      : uring_op(&do_complete),
        service_(service),
        handler_(std::forward<H>(handler)),
        work_(asio::make_work_guard(asio::get_associated_executor(handler_, io_ex))),
        impl(std::forward<Args>(args)...) {}

  /// Connects the handler's cancellation slot (if any) to the service.
  void connect_cancellation() {
    slot_ = asio::get_associated_cancellation_slot(handler_);
    if (slot_.is_connected()) {
      slot_.template emplace<cancel_handler>(service_, this);
    }
  }

 private:
  struct cancel_handler {
    // A constructor, not an aggregate: clang 14 cannot build an aggregate
    // from the parenthesised arguments that slot.emplace passes.
    cancel_handler(uring_service& s, uring_op* o) noexcept : service(s), op(o) {}
    uring_service& service;
    uring_op* op;
    void operator()(asio::cancellation_type type) const noexcept {
      if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                   asio::cancellation_type::total)) != asio::cancellation_type::none) {
        service.cancel(op);
      }
    }
  };

  static void do_complete(uring_op* base, bool invoke) noexcept {
    std::unique_ptr<uring_handler_op> self(static_cast<uring_handler_op*>(base));
    if (self->slot_.is_connected()) {
      self->slot_.clear();
    }
    if (!invoke) {
      return;  // service shutdown: the handler is destroyed, never called
    }
    auto args = self->impl.result(self->res, self->cancel_requested);
    Handler handler(std::move(self->handler_));
    auto work = std::move(self->work_);
    self.reset();  // free the op before the upcall, as Asio does
    executor_type ex = work.get_executor();
    asio::dispatch(ex, [h = std::move(handler), a = std::move(args)]() mutable {
      std::apply(std::move(h), std::move(a));
    });
    work.reset();
  }

  uring_service& service_;
  Handler handler_;
  asio::executor_work_guard<executor_type> work_;
  asio::cancellation_slot slot_;

 public:
  Impl impl;  ///< op-specific state; its address is stable until completion
};

/// Creates the op for `handler`, prepares its SQE and queues it on `service`.
template <class Impl, class Handler, class... Args>
void launch_uring_op(uring_service& service, const asio::any_io_executor& io_ex, Handler&& handler,
                     Args&&... args) {
  using op_type = uring_handler_op<std::decay_t<Handler>, Impl>;
  auto op = std::make_unique<op_type>(service, io_ex, std::forward<Handler>(handler),
                                      std::forward<Args>(args)...);
  io_uring_sqe sqe = op->impl.prepare();
  op->connect_cancellation();
  service.start(op.release(), sqe);
}

}  // namespace coproc::detail
