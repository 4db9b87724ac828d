#pragma once
// The parent's end of the zygote's report pipe, read when it is readable and
// never blocking: the pool's loop waits for readiness, and stats() reads
// whatever already arrived, so both see the same reports in the same order.

#include <asio/any_io_executor.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <cstddef>
#include <vector>

#include "coproc/executors/detail/zygote.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc::detail {

class zygote_reports {
 public:
  /// Takes the read end of the report pipe and makes it non-blocking.
  /// Throws std::system_error naming fcntl.
  zygote_reports(const asio::any_io_executor& ex, unique_fd read_end);

  /// Appends every whole report that arrived to `out`, without blocking.
  /// False once the zygote's end is closed (the zygote is gone).
  bool read_available(std::vector<zygote_report>& out);

  /// Where the loop waits for readiness (async_wait(wait_read)).
  asio::posix::stream_descriptor& descriptor() noexcept { return fd_; }

 private:
  asio::posix::stream_descriptor fd_;
  std::byte partial_[sizeof(zygote_report)] = {};
  std::size_t have_ = 0;  // bytes of a report not yet whole
};

}  // namespace coproc::detail
