#pragma once
// The receiving side of remote_error for standard exception types (remote_error.cpp).

#include <exception>
#include <string>
#include <system_error>

namespace coproc::detail {

/// The standard exception named `type_name` (demangled, e.g. "std::out_of_range") with
/// `message` as its what() where the type takes one; null for any other type.
std::exception_ptr standard_exception(const std::string& type_name, const std::string& message);

/// A category that stands in for a sender's category this process cannot name: name() is
/// `name`, message(value) the sender's text. One object per name, kept for the life of
/// the process (error_codes refer to it).
const std::error_category& stand_in_category(const std::string& name, int value,
                                             const std::string& message);

}  // namespace coproc::detail
