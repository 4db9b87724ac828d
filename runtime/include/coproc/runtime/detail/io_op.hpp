#pragma once
// The record of one operation in flight on a uring_service, whichever backend
// runs it. The op describes itself twice: as an SQE for the ring backend, and
// as a readiness plan plus a non-blocking attempt for the reactor backend.
// Cancellation, completion through the handler's executor and the rule that
// an op completes only after every event aimed at it arrived are shared
// (io_handler_op.hpp, op_list below); the backends differ only in how they
// wait.

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <utility>

namespace coproc::detail {

/// How the reactor backend waits before it tries an op again.
struct reactor_plan {
  /// doorbell: a futex wait whose wakers also ring an eventfd
  /// (coproc::futex_doorbell): the reactor watches the eventfd, edge-triggered;
  /// elsewhere it is a futex wait on word/expected.
  enum class kind { readable, writable, futex, doorbell };
  kind what = kind::readable;
  int fd = -1;  ///< readable/writable: the op's own fd; doorbell: its eventfd; futex: -1
  std::atomic<std::uint32_t>* word = nullptr;  ///< futex, doorbell: the word
  std::uint32_t expected = 0;                  ///< futex, doorbell: wait while word == expected

  static reactor_plan readable(int fd) { return {kind::readable, fd, nullptr, 0}; }
  static reactor_plan writable(int fd) { return {kind::writable, fd, nullptr, 0}; }
  static reactor_plan futex(std::atomic<std::uint32_t>& w, std::uint32_t e) {
    return {kind::futex, -1, &w, e};
  }
  static reactor_plan doorbell(int bell, std::atomic<std::uint32_t>& w, std::uint32_t e) {
    return {kind::doorbell, bell, &w, e};
  }
};

/// One operation in flight. Its address is the ring's user_data; the reactor
/// backend keeps it in the same in-flight list.
class io_op {
 public:
  /// Called once, on a thread running the io_context, when every event for
  /// the op has arrived (invoke = true) or at service shutdown (invoke =
  /// false: destroy the handler without calling it). Deletes the op.
  virtual void complete(bool invoke) noexcept = 0;
  /// Ring backend: the SQE (user_data is set by the service).
  virtual io_uring_sqe prepare() noexcept = 0;
  /// Reactor backend: what to wait for when attempt() would block.
  virtual reactor_plan plan() = 0;
  /// Reactor backend: the operation itself, without blocking: a result in the
  /// CQE convention (>= 0, or -errno), -EAGAIN when it must wait. Futex ops
  /// are never attempted; doorbell ops check their word.
  virtual int attempt() noexcept = 0;

  int res = 0;                    ///< the op's own result (CQE convention)
  unsigned pending = 0;           ///< events still expected (the op's, plus a cancel's)
  bool cancel_requested = false;  ///< a cancel was queued for it
  bool waits_on_futex = false;    ///< a futex wait (the watcher takes it without FUTEX_WAIT)
  bool on_watcher = false;        ///< handed to the futex watcher (both backends)
  bool waiting = false;           ///< reactor backend: in the interest set, waiting for readiness
  bool wants_write = false;       ///< reactor backend: waits for POLLOUT (else POLLIN)
  bool edge_triggered = false;    ///< reactor backend: a doorbell eventfd, never read
  int fd = -1;                    ///< reactor backend: the fd it waits on (cancel_fd)
  io_op* prev = nullptr;          ///< in-flight list (owned by the service)
  io_op* next = nullptr;

 protected:
  io_op() = default;
  ~io_op() = default;
};

/// The service's list of ops in flight (intrusive, guarded by its mutex).
class op_list {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  io_op* front() const noexcept { return head_; }
  void push(io_op* op) noexcept {
    op->prev = nullptr;
    op->next = head_;
    if (head_ != nullptr) {
      head_->prev = op;
    }
    head_ = op;
  }
  void erase(io_op* op) noexcept {
    if (op->prev != nullptr) {
      op->prev->next = op->next;
    } else {
      head_ = op->next;
    }
    if (op->next != nullptr) {
      op->next->prev = op->prev;
    }
    op->prev = op->next = nullptr;
  }
  io_op* take_all() noexcept { return std::exchange(head_, nullptr); }

 private:
  io_op* head_ = nullptr;
};

}  // namespace coproc::detail
