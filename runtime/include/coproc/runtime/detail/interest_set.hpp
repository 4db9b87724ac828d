#pragma once
// The epoll backend's own epoll instance: the fds its waiting ops need, with
// the ops waiting on each. Asio's reactor watches this one epoll fd (an epoll
// fd is readable while any fd in it is ready), never the ops' own fds: Asio
// sets O_NONBLOCK on every descriptor it waits on, and that flag belongs to
// the open file, which a forked child or a blocking reader in this process may
// share. Registered level-triggered while an op waits, removed as soon as none
// does, so no registration ever outlives the ops of its fd.
//
// A doorbell eventfd (coproc::futex_doorbell) is the exception in one way: it
// is never read (every process watching it must see every ring), so it stays
// readable once rung and is registered edge-triggered. Adding it while
// readable reports it once at once; to pay that only once per wait, not once
// per attempt, its registration stays through a ready batch and settle()
// removes it afterwards if no op waits on it again.
//
// Not thread-safe: the service calls it under its mutex.

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "coproc/runtime/detail/io_op.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc::detail {

class interest_set {
 public:
  /// Creates the epoll instance. Throws std::system_error naming epoll_create1.
  interest_set();

  int fd() const noexcept { return epoll_.get(); }
  bool empty() const noexcept { return by_fd_.empty(); }

  /// Makes `op` wait for readiness of op->fd (POLLOUT if op->wants_write).
  /// Returns 0, or the errno of epoll_ctl (the op then fails with it).
  int add(io_op* op) noexcept;
  /// Stops `op` waiting (no-op when it is not).
  void remove(io_op* op) noexcept;
  /// Every op whose fd is ready now (epoll_wait without blocking); they are
  /// no longer waiting.
  std::vector<io_op*> take_ready();
  /// After the ops take_ready() returned were attempted: drops the
  /// registrations of doorbells that no op waits on any more.
  void settle() noexcept;

 private:
  struct entry {
    std::vector<io_op*> readers;
    std::vector<io_op*> writers;
    std::uint32_t registered = 0;  // events in the epoll instance, 0: not in it
    bool edge = false;             // a doorbell: EPOLLET, kept until settle()
  };
  int update(int fd, entry& e) noexcept;

  unique_fd epoll_;
  std::unordered_map<int, entry> by_fd_;
  std::vector<int> unsettled_;  // doorbells take_ready() left registered
};

}  // namespace coproc::detail
