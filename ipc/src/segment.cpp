// Segments of coproc::shared_buffer: creation, the per-process registry that
// finds a mapping again by identity, reopening a peer's segment through
// /proc, and the worker's bounded cache and result pins.

#include "coproc/ipc/detail/segment.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {
namespace {

// Seals every segment carries: its size never changes, so a mapping checked
// against fstat once can never fault past the end.
constexpr int size_seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

/// A segment a worker described in a result, held until the parent has
/// released the result frame past `position` (0: that frame is not written yet).
struct segment_pin {
  std::uint64_t position;
  std::shared_ptr<segment> seg;
};

using segment_key = std::tuple<std::uint64_t, std::uint64_t, bool>;  // dev, ino, writable

/// Every segment mapped in this process, weakly: a handle decoded here finds
/// the mapping it already has. Pruned of expired entries as it grows.
struct registry {
  std::mutex mutex;
  std::map<segment_key, std::weak_ptr<segment>> live;
  std::size_t prune_at = 64;
  // The worker's strong references, each under the same mutex.
  std::list<std::shared_ptr<segment>> cache;  // most recent first
  std::size_t cache_bound = 0;
  bool pins_enabled = false;
  std::vector<segment_pin> pins;
  // pins.size(), readable without the mutex: a worker's loop looks at it
  // around every task, and most tasks pin nothing.
  std::atomic<std::size_t> pinned{0};

  static registry& get() {
    // Never destroyed: segments may drop during static destruction.
    static registry* r = [] {
      auto* made = new registry;
      // A fork while another thread holds the mutex would leave it locked
      // for ever in the child (a coproc::process forked from a threaded host).
      ::pthread_atfork([] { get().mutex.lock(); }, [] { get().mutex.unlock(); },
                       [] { get().mutex.unlock(); });
      return made;
    }();
    return *r;
  }

  std::shared_ptr<segment> find(const segment_key& k) {
    auto it = live.find(k);
    return it == live.end() ? nullptr : it->second.lock();
  }

  void add(const std::shared_ptr<segment>& s) {
    if (live.size() >= prune_at) {
      std::erase_if(live, [](const auto& e) { return e.second.expired(); });
      prune_at = std::max<std::size_t>(64, 2 * live.size());
    }
    live[{s->dev(), s->ino(), s->writable()}] = s;
  }

  /// Called with the mutex held; returns what falls out of the cache so that
  /// it is unmapped after the mutex is released.
  std::shared_ptr<segment> remember(const std::shared_ptr<segment>& s) {
    if (cache_bound == 0) {
      return nullptr;
    }
    cache.remove(s);
    cache.push_front(s);
    if (cache.size() > cache_bound) {
      auto out = std::move(cache.back());
      cache.pop_back();
      return out;
    }
    return nullptr;
  }
};

[[noreturn]] void throw_unavailable(const segment_wire& w, int err) {
  throw std::system_error(coproc::errc::segment_unavailable,
                          "shared_buffer: /proc/" + std::to_string(w.pid) + "/fd/" +
                              std::to_string(w.fd) + ": " + std::generic_category().message(err));
}

[[noreturn]] void throw_mismatch(const char* what) {
  throw std::system_error(coproc::errc::frame_corrupt,
                          std::string("shared_buffer handle: ") + what);
}

std::shared_ptr<segment> map_segment(unique_fd fd, std::size_t bytes, bool writable,
                                     const struct stat& st) {
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, bytes, prot, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) {
    throw_errno("mmap");
  }
  return std::make_shared<segment>(std::move(fd), static_cast<std::byte*>(p), bytes, writable,
                                   static_cast<std::uint64_t>(st.st_dev),
                                   static_cast<std::uint64_t>(st.st_ino));
}

/// The sender's fd reopened and checked against every field of the handle.
std::shared_ptr<segment> reopen(const segment_wire& w, bool writable) {
  if (w.pid <= 0 || w.fd < 0 || w.bytes == 0) {
    throw_mismatch("no sender");
  }
  const std::string path = "/proc/" + std::to_string(w.pid) + "/fd/" + std::to_string(w.fd);
  // O_RDONLY for a read-only handle: the mapping cannot be made writable.
  const int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    throw_unavailable(w, errno);
  }
  unique_fd owned(fd);
  struct stat st {};
  check_syscall(::fstat(fd, &st), "fstat");
  // The fd number may have been reused for another file since the handle
  // was written, or the handle may lie: the file must be the segment named.
  if (static_cast<std::uint64_t>(st.st_dev) != w.dev ||
      static_cast<std::uint64_t>(st.st_ino) != w.ino) {
    throw_mismatch("the sender's fd is another file");
  }
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & size_seals) != size_seals || !S_ISREG(st.st_mode)) {
    throw_mismatch("not a sealed coproc segment");
  }
  if (st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) != w.bytes) {
    throw_mismatch("size differs from the segment's");
  }
  return map_segment(std::move(owned), static_cast<std::size_t>(w.bytes), writable, st);
}

}  // namespace

segment::~segment() {
  if (data_ != nullptr) {
    ::munmap(data_, bytes_);
  }
}

std::shared_ptr<segment> create_segment(std::size_t bytes, const char* debug_name) {
  unique_fd fd(
      check_syscall(::memfd_create(debug_name, MFD_CLOEXEC | MFD_ALLOW_SEALING), "memfd_create"));
  // memfds are created 0777: only this user may reopen it through /proc.
  check_syscall(::fchmod(fd.get(), 0600), "fchmod");
  check_syscall(::ftruncate(fd.get(), static_cast<off_t>(bytes)), "ftruncate");
  check_syscall(::fcntl(fd.get(), F_ADD_SEALS, size_seals), "fcntl(F_ADD_SEALS)");
  struct stat st {};
  check_syscall(::fstat(fd.get(), &st), "fstat");
  auto s = map_segment(std::move(fd), bytes, true, st);
  registry& r = registry::get();
  std::lock_guard g(r.mutex);
  r.add(s);
  return s;
}

std::shared_ptr<segment> map_segment_fd(unique_fd fd) {
  struct stat st {};
  check_syscall(::fstat(fd.get(), &st), "fstat");
  auto s = map_segment(std::move(fd), static_cast<std::size_t>(st.st_size), true, st);
  registry& r = registry::get();
  std::lock_guard g(r.mutex);
  if (!r.find({s->dev(), s->ino(), true})) {
    r.add(s);
  }
  return s;
}

segment_wire describe_segment(const std::shared_ptr<segment>& s) {
  segment_wire w;
  if (!s) {
    return w;
  }
  w.pid = static_cast<std::int32_t>(::getpid());
  w.fd = s->fd();
  w.dev = s->dev();
  w.ino = s->ino();
  w.bytes = s->bytes();
  registry& r = registry::get();
  std::lock_guard g(r.mutex);
  if (r.pins_enabled) {
    r.pins.push_back({0, s});
    r.pinned.store(r.pins.size(), std::memory_order_release);
  }
  return w;
}

std::shared_ptr<segment> attach_segment(const segment_wire& w, bool writable) {
  registry& r = registry::get();
  const segment_key key{w.dev, w.ino, writable};
  if (w.pid == static_cast<std::int32_t>(::getpid())) {
    // A handle this process wrote (a task returning what it was given comes
    // back to the parent that way): only a live mapping of its own counts.
    std::lock_guard g(r.mutex);
    auto s = r.find(key);
    if (!s && !writable) {
      s = r.find({w.dev, w.ino, true});
    }
    if (!s || s->bytes() != w.bytes) {
      throw_mismatch("names no live segment of this process");
    }
    return s;
  }
  std::shared_ptr<segment> evicted;
  {
    std::lock_guard g(r.mutex);
    if (auto s = r.find(key); s && s->bytes() == w.bytes && r.cache_bound != 0) {
      // A worker's cached mapping: the sender is its own parent, trusted.
      evicted = r.remember(s);
      return s;
    }
  }
  auto fresh = reopen(w, writable);
  std::lock_guard g(r.mutex);
  // Two threads may reopen the same segment at once: keep the first mapping.
  if (auto s = r.find(key)) {
    fresh = s;
  } else {
    r.add(fresh);
  }
  evicted = r.remember(fresh);
  return fresh;
}

void segment_cache_bound(std::size_t bound) noexcept {
  registry& r = registry::get();
  std::lock_guard g(r.mutex);
  r.cache_bound = bound;
}

void segment_cache_clear() noexcept {
  registry& r = registry::get();
  std::list<std::shared_ptr<segment>> out;
  {
    std::lock_guard g(r.mutex);
    out.swap(r.cache);
  }
}

void segment_pins_enable() noexcept {
  registry& r = registry::get();
  std::lock_guard g(r.mutex);
  r.pins_enabled = true;
}

void segment_pins_tag(std::uint64_t position) noexcept {
  registry& r = registry::get();
  if (r.pinned.load(std::memory_order_acquire) == 0) {
    return;  // a pin added after this look is tagged at the next result
  }
  std::lock_guard g(r.mutex);
  for (auto& p : r.pins) {
    if (p.position == 0) {
      p.position = position;
    }
  }
}

void segment_pins_release_if(bool (*released)(void*, std::uint64_t), void* ctx) noexcept {
  registry& r = registry::get();
  if (r.pinned.load(std::memory_order_acquire) == 0) {
    return;
  }
  std::vector<segment_pin> out;  // unmapped after the mutex is released
  std::lock_guard g(r.mutex);
  // A task's own threads may describe segments meanwhile: under the mutex.
  auto keep = std::stable_partition(r.pins.begin(), r.pins.end(), [&](const segment_pin& p) {
    return p.position == 0 || !released(ctx, p.position);
  });
  out.assign(std::make_move_iterator(keep), std::make_move_iterator(r.pins.end()));
  r.pins.erase(keep, r.pins.end());
  r.pinned.store(r.pins.size(), std::memory_order_release);
}

}  // namespace coproc::detail
