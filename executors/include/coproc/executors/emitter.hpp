#pragma once
/// coproc::emitter<T>: how a streaming task sends values to its caller while
/// it runs (basic_pool::stream).

#include <cstddef>
#include <span>

#include "coproc/ipc/codec.hpp"

namespace coproc {
namespace detail {

/// Where a streaming task's values go: its worker's result ring.
class emit_sink {
 public:
  /// Space for one value of `n` encoded bytes in a frame of the result
  /// ring. Waits while the caller has pool_options::stream_buffer values
  /// unread; null when the task was asked to stop (the value is dropped).
  /// Throws payload_too_large for a value larger than a ring frame.
  virtual std::byte* reserve_emitted(std::size_t n) = 0;
  /// Publishes the value last reserved.
  virtual void commit_emitted(std::size_t n) = 0;

 protected:
  ~emit_sink() = default;
};

}  // namespace detail

/// The first parameter of a streaming task:
///
///     void scan(coproc::emitter<match>& out, std::string path) {
///       for (...) out(found);          // the caller's next() yields it
///     }
///     auto s = pool.stream(scan, path);
///     while (auto m = co_await s.next()) use(*m);
///
/// Each call sends one value through the worker's result ring, at once: the
/// caller reads values in emission order while the task still runs (values
/// emitted faster than the caller's loop wakes up arrive together, one
/// wake-up for all). A call blocks while the caller has
/// pool_options::stream_buffer values unread, so a slow reader bounds the
/// memory of both sides. Once the task was asked to stop (see
/// coproc::this_task::stop_requested), a call drops its value and returns at
/// once. A value's encoding must fit one ring frame (64 KiB, or less with a
/// small pool_options::ring_bytes): a larger one throws std::system_error
/// with errc::payload_too_large out of the call; return large data as a
/// coproc::shared_buffer instead. Not copyable: it belongs to its task.
template <class T>
class emitter {
 public:
  using value_type = T;

  explicit emitter(detail::emit_sink& sink) noexcept : sink_(&sink) {}
  emitter(const emitter&) = delete;
  emitter& operator=(const emitter&) = delete;

  /// Sends `value` to the caller (see the class comment for when it blocks).
  void operator()(const T& value) {
    const std::size_t n = coproc::encoded_size(value);
    std::byte* out = sink_->reserve_emitted(n);
    if (out == nullptr) {
      return;  // the task was asked to stop: nobody reads it any more
    }
    coproc::encode(std::span<std::byte>(out, n), value);
    sink_->commit_emitted(n);
  }

 private:
  detail::emit_sink* sink_;
};

}  // namespace coproc
