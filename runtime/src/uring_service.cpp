// The front of uring_service: choosing the backend, the in-flight list and
// the completion rule both backends share, futex waits through the watcher,
// shutdown. The ring itself is ring_backend.cpp, the epoll side
// reactor_backend.cpp.

#include "coproc/runtime/uring_service.hpp"

#include <unistd.h>

#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <system_error>
#include <typeinfo>

#include "coproc/runtime/detail/futex_watcher.hpp"
#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc {

std::string_view to_string(io_backend b) noexcept {
  switch (b) {
    case io_backend::automatic:
      return "automatic";
    case io_backend::uring:
      return "uring";
    case io_backend::epoll:
      return "epoll";
  }
  return "unknown";
}

std::optional<io_backend> io_backend_from_environment() {
  const char* value = std::getenv("COPROC_IO_BACKEND");
  if (value == nullptr || *value == '\0') {
    return std::nullopt;
  }
  std::string_view v(value);
  if (v == "uring") {
    return io_backend::uring;
  }
  if (v == "epoll") {
    return io_backend::epoll;
  }
  if (v == "auto" || v == "automatic") {
    return io_backend::automatic;
  }
  throw std::invalid_argument("COPROC_IO_BACKEND=" + std::string(v) +
                              ": expected uring, epoll or auto");
}

uring_service::uring_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {
  throw std::invalid_argument(
      "coproc::uring_service needs an asio::io_context (call uring_service::install on it, "
      "or pass an io_context executor)");
}

uring_service& uring_service::of_any(const asio::any_io_executor& ex,
                                     asio::execution_context& ctx) {
  // any_executor::target<T>() of Asio 1.22 does not check the type: compare
  // target_type() first.
  using io_executor = asio::io_context::executor_type;
  if (ex.target_type() == typeid(io_executor)) {
    return asio::use_service<uring_service>(ex.target<io_executor>()->context());
  }
  if (ex.target_type() == typeid(asio::strand<io_executor>)) {
    return asio::use_service<uring_service>(
        ex.target<asio::strand<io_executor>>()->get_inner_executor().context());
  }
  return asio::use_service<uring_service>(ctx);
}

uring_service::uring_service(asio::io_context& ctx, uring_options options)
    : asio::execution_context::service(ctx), ctx_(&ctx), owner_(::getpid()) {
  io_backend wanted = io_backend::automatic;
  if (options.backend) {
    wanted = *options.backend;
  } else if (auto from_env = io_backend_from_environment()) {
    wanted = *from_env;
  }
  if (wanted == io_backend::epoll) {
    fallback_reason_ =
        options.backend ? "io_backend::epoll was asked for" : "COPROC_IO_BACKEND=epoll";
    reactor_open();
    return;
  }
  // A ring refused for any reason (setup, probe, eventfd registration) throws
  // errc::uring_unavailable naming it; automatic turns that into epoll.
  try {
    ring_open(options);
    backend_ = io_backend::uring;
  } catch (const std::system_error& e) {
    if (wanted == io_backend::uring) {
      throw;
    }
    fallback_reason_ = e.what();
    reactor_open();
  }
}

uring_service::~uring_service() {
  shutdown();
  event_.reset();
  if (ring_ready_) {
    io_uring_queue_exit(&ring_);  // this process's mappings and fd only
  }
}

bool uring_service::inherited() const noexcept {
  return ::getpid() != owner_;
}

void uring_service::abandon_inherited() noexcept {
  // Closing our copies of the fds is harmless; destroying Asio's descriptor
  // objects is not (they would EPOLL_CTL_DEL the parent's registrations from
  // the shared epoll instance), nor is stopping the watcher (its threads are
  // the parent's: joining them would wait for ever). Both are left unfreed.
  for (auto* d : {event_.release(), interest_wait_.release()}) {
    if (d != nullptr) {
      ::close(d->native_handle());
    }
  }
  (void)watcher_.release();
  detail::io_op* op = in_flight_.take_all();
  while (op != nullptr) {
    detail::io_op* next = op->next;
    op->complete(false);
    op = next;
  }
}

uring_service& uring_service::install(asio::io_context& ctx, uring_options options) {
  auto service = std::make_unique<uring_service>(ctx, options);
  asio::add_service(ctx, service.get());  // throws service_already_exists
  return *service.release();
}

void uring_service::start(detail::io_op* op) {
  if (op->waits_on_futex && !has_futex_wait_) {
    // A futex wait with a doorbell waits on its eventfd in the interest set;
    // any other takes the watcher thread.
    if (backend_ == io_backend::epoll && op->plan().what == detail::reactor_plan::kind::doorbell) {
      reactor_start(op);
    } else {
      watch_futex(op);
    }
  } else if (backend_ == io_backend::uring) {
    ring_start(op);
  } else {
    reactor_start(op);
  }
}

void uring_service::cancel(detail::io_op* op) noexcept {
  if (inherited()) {
    return;  // the op is a copy of the parent's, which the parent still runs
  }
  if (backend_ == io_backend::uring && !op->on_watcher) {
    ring_cancel(op);
    return;
  }
  std::vector<detail::io_op*> aborted;
  {
    std::lock_guard lock(mutex_);
    cancel_locked(op, aborted);
  }
  for (detail::io_op* a : aborted) {
    asio::post(*ctx_, [this, a] { finish_event(a, true, -ECANCELED); });
  }
}

void uring_service::cancel_fd(int fd) noexcept {
  if (inherited()) {
    return;  // a cancel on the shared ring would withdraw the parent's ops on fd
  }
  if (backend_ == io_backend::uring) {
    ring_cancel_fd(fd);
    return;
  }
  std::vector<detail::io_op*> aborted;
  {
    // Synchronous: the fd leaves the interest set before the caller closes it.
    std::lock_guard lock(mutex_);
    for (detail::io_op* op = in_flight_.front(); op != nullptr; op = op->next) {
      if (op->fd == fd && !op->on_watcher) {
        cancel_locked(op, aborted);
      }
    }
  }
  for (detail::io_op* a : aborted) {
    asio::post(*ctx_, [this, a] { finish_event(a, true, -ECANCELED); });
  }
}

void uring_service::cancel_locked(detail::io_op* op,
                                  std::vector<detail::io_op*>& aborted) noexcept {
  if (op->pending == 0 || op->cancel_requested || shut_down_) {
    return;
  }
  op->cancel_requested = true;
  // An op that is waiting is taken out of its wait now and completes with
  // operation_aborted; one whose attempt is posted or running sees the flag
  // there; one the futex watcher already woke completes with that wake-up.
  bool now = op->on_watcher ? (watcher_ && watcher_->remove(op)) : reactor_cancel_locked(op);
  if (now) {
    aborted.push_back(op);
  }
}

void uring_service::finish_event(detail::io_op* op, bool own, int res) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (shut_down_) {
      return;  // shutdown owns every op now
    }
    if (own) {
      op->res = res;
    }
    if (--op->pending != 0) {
      return;
    }
    in_flight_.erase(op);
  }
  op->complete(true);
}

detail::futex_watcher& uring_service::watcher() {
  // Under mutex_.
  if (!watcher_) {
    watcher_ = std::make_unique<detail::futex_watcher>([this](detail::io_op* op) {
      asio::post(*ctx_, [this, op] { finish_event(op, true, 0); });
    });
  }
  return *watcher_;
}

void uring_service::watch_futex(detail::io_op* op) {
  {
    std::lock_guard lock(mutex_);
    op->pending = 1;
    op->on_watcher = true;
    in_flight_.push(op);
  }
  // One loop turn before a thread is involved: a word that changes meanwhile
  // (a producer on another CPU) completes the wait without the watcher's
  // extra wake-up. Never inline: completion waits for the posted check.
  asio::post(*ctx_, [this, op] { watch_futex_now(op); });
}

void uring_service::watch_futex_now(detail::io_op* op) {
  detail::reactor_plan plan = op->plan();
  bool done_now = false;
  int res = 0;
  {
    // Added under mutex_, so a cancel (which removes it under the same mutex
    // order: service, then watcher) always finds it, or sees the flag here.
    std::lock_guard lock(mutex_);
    if (shut_down_) {
      return;
    }
    res = op->cancel_requested ? -ECANCELED : 0;
    done_now = op->cancel_requested || plan.word->load(std::memory_order_acquire) != plan.expected;
    if (!done_now) {
      watcher().add(op, *plan.word, plan.expected);
    }
  }
  if (done_now) {
    finish_event(op, true, res);
  }
}

void uring_service::shutdown() {
  std::unique_lock lock(mutex_);
  if (shut_down_) {
    return;
  }
  shut_down_ = true;
  if (inherited()) {
    lock.unlock();
    abandon_inherited();
    return;
  }
  if (backend_ == io_backend::uring) {
    ring_shutdown(lock);  // waits for the kernel to let go of every op's buffers
  }
  detail::io_op* op = in_flight_.take_all();
  std::unique_ptr<detail::futex_watcher> watcher = std::move(watcher_);
  lock.unlock();
  if (watcher) {
    watcher->stop();  // no watcher thread touches an op after this
  }
  while (op != nullptr) {
    detail::io_op* next = op->next;
    op->complete(false);
    op = next;
  }
  asio::error_code ignored;
  if (event_) {
    event_->cancel(ignored);
  }
}

}  // namespace coproc
