#pragma once
// Puts context in front of an exception's message without changing its type: what
// `map` uses to say which items' chunk failed.

#include <exception>
#include <string>

namespace coproc::detail {

/// The exception in `error` again, its what() starting with `prefix`, for the types
/// whose message can be rebuilt: std::system_error (code kept; a worker_crashed_error
/// keeps its status), coproc::remote_error (type name and code kept), and the standard
/// exceptions that take a message. Any other exception is returned as it is.
std::exception_ptr with_prefix(std::exception_ptr error, const std::string& prefix);

}  // namespace coproc::detail
