#pragma once
/// coproc::io_backend: how an io_context's coproc operations wait: an io_uring
/// ring, or Asio's own reactor (epoll).

#include <optional>
#include <string_view>

namespace coproc {

/// The backend of a uring_service, chosen once per io_context.
///
/// - automatic: io_uring when the kernel and the seccomp profile allow it and
///   its probe has every opcode coproc needs, otherwise epoll. Never throws
///   because io_uring is refused.
/// - uring: io_uring or a std::system_error with errc::uring_unavailable.
/// - epoll: Asio's reactor; futex waits go through coproc's futex watcher
///   threads (one per word being waited on), which turn a FUTEX_WAKE into a
///   completion on the io_context.
enum class io_backend { automatic, uring, epoll };

/// "automatic", "uring" or "epoll".
std::string_view to_string(io_backend b) noexcept;

/// The backend named by the environment variable COPROC_IO_BACKEND
/// (`uring`, `epoll` or `auto`), or nullopt when it is unset or empty.
/// Throws std::invalid_argument naming the variable for any other value.
std::optional<io_backend> io_backend_from_environment();

}  // namespace coproc
