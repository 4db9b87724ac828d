#pragma once
// The memfd segment behind coproc::shared_buffer (and the codable form of
// shared_memory): one mapping per segment per process, found again by its
// identity, and the wire handle that names it to another process.
//
// A handle crosses as (sender pid, sender fd, st_dev, st_ino, bytes): the
// receiver reopens the sender's fd through /proc/<pid>/fd/<fd> (same user,
// no ptrace rights needed, unlike pidfd_getfd, and allowed by Docker's
// default seccomp profile), then checks the file it got against the rest of
// the handle before mapping it. See docs/ARCHITECTURE.md, "Shared buffers".

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "coproc/runtime/unique_fd.hpp"

namespace coproc::detail {

/// One memfd mapped in this process. The fd stays open while the mapping
/// lives: a peer reopens the segment through it.
class segment {
 public:
  segment(unique_fd fd, std::byte* data, std::size_t bytes, bool writable, std::uint64_t dev,
          std::uint64_t ino) noexcept
      : fd_(std::move(fd)), data_(data), bytes_(bytes), writable_(writable), dev_(dev), ino_(ino) {}
  segment(const segment&) = delete;
  segment& operator=(const segment&) = delete;
  ~segment();

  std::byte* data() const noexcept { return data_; }
  std::size_t bytes() const noexcept { return bytes_; }
  bool writable() const noexcept { return writable_; }
  int fd() const noexcept { return fd_.get(); }
  std::uint64_t dev() const noexcept { return dev_; }
  std::uint64_t ino() const noexcept { return ino_; }

 private:
  unique_fd fd_;
  std::byte* data_;
  std::size_t bytes_;
  bool writable_;
  std::uint64_t dev_;
  std::uint64_t ino_;
};

/// What crosses for one segment. Every field is checked by the receiver
/// against the file it reopens: a peer (a task) may have written any of them.
struct segment_wire {
  std::int32_t pid = 0;  // 0: no segment (an empty handle)
  std::int32_t fd = -1;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::uint64_t bytes = 0;
};

/// A new zero-filled segment of `bytes` (> 0), sealed against shrinking and
/// growing (a peer's mapping can never fault past the end).
/// @throws std::system_error naming the failing call.
std::shared_ptr<segment> create_segment(std::size_t bytes, const char* debug_name);

/// The handle that names `s` to another process; in a worker, `s` also stays
/// pinned until the parent has read the result frame that carries it.
segment_wire describe_segment(const std::shared_ptr<segment>& s);

/// The segment named by `w`, mapped read-write or read-only: this process's
/// own mapping when it has one, else the sender's fd reopened and checked.
/// @throws std::system_error(coproc::errc::frame_corrupt) when the file does
///         not match the handle; std::system_error(errc::segment_unavailable)
///         when the sender no longer holds the fd (or /proc refuses it).
std::shared_ptr<segment> attach_segment(const segment_wire& w, bool writable);

/// Maps an fd received by other means (shared_memory::attach): read-write,
/// its size from fstat; a new mapping even when this process has one.
/// @throws std::system_error naming the failing call.
std::shared_ptr<segment> map_segment_fd(unique_fd fd);

/// Writes the handle naming `s` (empty: no segment) through a cereal archive.
template <class Archive>
void save_segment(Archive& ar, const std::shared_ptr<segment>& s) {
  const segment_wire w = describe_segment(s);
  ar(w.pid, w.fd, w.dev, w.ino, w.bytes);
}

/// Reads a handle written by save_segment and maps what it names (null for an
/// empty handle). See attach_segment.
template <class Archive>
std::shared_ptr<segment> load_segment(Archive& ar, bool writable) {
  segment_wire w;
  ar(w.pid, w.fd, w.dev, w.ino, w.bytes);
  return w.pid == 0 ? nullptr : attach_segment(w, writable);
}

/// Worker-side hooks (called by the pool's worker loop only).
/// Keeps up to `bound` recently attached segments mapped, so a task that gets
/// the same buffer again does not map it again; 0 (the default) keeps none.
void segment_cache_bound(std::size_t bound) noexcept;
/// Drops every cached mapping (an idle worker holds none).
void segment_cache_clear() noexcept;
/// Segments described since the last call are tagged with `position` (the
/// result ring position past the frame that carries them).
void segment_pins_tag(std::uint64_t position) noexcept;
/// Unpins tagged segments for which `released(ctx, position)` is true.
void segment_pins_release_if(bool (*released)(void*, std::uint64_t), void* ctx) noexcept;
/// The same with any callable `released(position)`.
template <class Released>
void segment_pins_release(Released released) {
  segment_pins_release_if(
      [](void* ctx, std::uint64_t position) { return (*static_cast<Released*>(ctx))(position); },
      &released);
}

/// Turns pinning on in this process (a worker: its results carry handles).
void segment_pins_enable() noexcept;

}  // namespace coproc::detail
