#include "coproc/runtime/detail/interest_set.hpp"

#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>

#include "coproc/runtime/detail/system_error.hpp"

namespace coproc::detail {

interest_set::interest_set()
    : epoll_(check_syscall(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1")) {}

int interest_set::update(int fd, entry& e) noexcept {
  const std::uint32_t in = e.edge ? std::uint32_t{EPOLLIN | EPOLLET} : EPOLLIN | EPOLLRDHUP;
  std::uint32_t want =
      (e.readers.empty() ? 0u : in) | (e.writers.empty() ? 0u : std::uint32_t{EPOLLOUT});
  if (want == e.registered) {
    return 0;
  }
  epoll_event ev{};
  ev.events = want;
  ev.data.fd = fd;
  int op = want == 0 ? EPOLL_CTL_DEL : (e.registered == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD);
  int rc = ::epoll_ctl(epoll_.get(), op, fd, &ev);
  if (rc != 0 && op != EPOLL_CTL_DEL) {
    return errno;
  }
  e.registered = want;
  return 0;
}

int interest_set::add(io_op* op) noexcept {
  entry& e = by_fd_[op->fd];
  e.edge = op->edge_triggered;
  (op->wants_write ? e.writers : e.readers).push_back(op);
  int err = update(op->fd, e);
  if (err != 0) {
    auto& list = op->wants_write ? e.writers : e.readers;
    list.pop_back();
    if (e.readers.empty() && e.writers.empty()) {
      by_fd_.erase(op->fd);
    }
    return err;
  }
  op->waiting = true;
  return 0;
}

void interest_set::remove(io_op* op) noexcept {
  if (!op->waiting) {
    return;
  }
  op->waiting = false;
  auto it = by_fd_.find(op->fd);
  if (it == by_fd_.end()) {
    return;
  }
  auto& list = op->wants_write ? it->second.writers : it->second.readers;
  list.erase(std::remove(list.begin(), list.end(), op), list.end());
  update(op->fd, it->second);
  if (it->second.registered == 0) {
    by_fd_.erase(it);
  }
}

std::vector<io_op*> interest_set::take_ready() {
  std::vector<io_op*> ready;
  epoll_event events[64];
  int n = ::epoll_wait(epoll_.get(), events, 64, 0);
  for (int i = 0; i < n; ++i) {
    auto it = by_fd_.find(events[i].data.fd);
    if (it == by_fd_.end()) {
      continue;
    }
    entry& e = it->second;
    // An error or hang-up wakes both directions: each op's attempt reports it.
    const std::uint32_t broken = EPOLLERR | EPOLLHUP;
    if ((events[i].events & (EPOLLIN | EPOLLRDHUP | broken)) != 0) {
      ready.insert(ready.end(), e.readers.begin(), e.readers.end());
      e.readers.clear();
    }
    if ((events[i].events & (EPOLLOUT | broken)) != 0) {
      ready.insert(ready.end(), e.writers.begin(), e.writers.end());
      e.writers.clear();
    }
    if (e.edge) {
      unsettled_.push_back(it->first);
      continue;
    }
    update(it->first, e);
    if (e.registered == 0) {
      by_fd_.erase(it);
    }
  }
  for (io_op* op : ready) {
    op->waiting = false;
  }
  return ready;
}

void interest_set::settle() noexcept {
  for (int fd : unsettled_) {
    auto it = by_fd_.find(fd);
    if (it == by_fd_.end() || !it->second.readers.empty()) {
      continue;
    }
    update(fd, it->second);
    by_fd_.erase(it);
  }
  unsettled_.clear();
}

}  // namespace coproc::detail
