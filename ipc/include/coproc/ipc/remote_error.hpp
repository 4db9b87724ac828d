#pragma once
/// coproc::remote_error: a task's exception, carried back from the process that ran it.

#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

#include "coproc/ipc/codec.hpp"

namespace coproc {

/// An exception thrown by a task in another process: the original exception's type name
/// (demangled) and message. what() is "TYPE: message".
///
/// When the original was a std::system_error, its error_code travels too (category name,
/// value and message): rethrow() turns it back into a std::system_error with that code.
/// A standard exception type comes back as itself (see to_exception_ptr).
///
/// Codable: encodes as type name, message, category name, code value (strings + int).
/// Copying never throws (the strings are shared). Thread safety: distinct objects: safe;
/// shared objects: safe for const use.
class remote_error : public std::runtime_error {
 public:
  /// @param type_name the original exception's type, e.g. "std::out_of_range".
  /// @param message the original what().
  remote_error(std::string type_name, std::string message);
  /// The same, for a std::system_error: category_name is its code's category name().
  remote_error(std::string type_name, std::string message, std::string category_name,
               int code_value, std::string code_message = std::string());

  /// The original exception's type name, demangled.
  const std::string& type_name() const noexcept { return data_->type_name; }
  /// The original exception's what().
  const std::string& message() const noexcept { return data_->message; }
  /// The error_category name() when the original was a std::system_error, else empty.
  const std::string& category_name() const noexcept { return data_->category_name; }
  /// The error_code value when the original was a std::system_error, else 0.
  int code_value() const noexcept { return data_->code_value; }
  /// The error_code's message() in the sending process, when the original was a
  /// std::system_error, else empty.
  const std::string& code_message() const noexcept { return data_->code_message; }

  template <class Archive>
  void save(Archive& ar) const {
    ar(data_->type_name, data_->message, data_->category_name, data_->code_value,
       data_->code_message);
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string type_name;
    std::string message;
    std::string category_name;
    int code_value = 0;
    std::string code_message;
    ar(type_name, message, category_name, code_value, code_message);
    *this = remote_error(std::move(type_name), std::move(message), std::move(category_name),
                         code_value, std::move(code_message));
  }

 private:
  friend struct codec_access;
  remote_error() : remote_error(std::string(), std::string()) {}

  struct data {
    std::string type_name;
    std::string message;
    std::string category_name;
    int code_value = 0;
    std::string code_message;
  };
  std::shared_ptr<const data> data_;
};

/// Captures the exception being handled; call it inside a catch block.
/// - a remote_error is returned as is (a task that awaited another pool);
/// - a std::system_error keeps its code's category name and value;
/// - another std::exception gives its what();
/// - anything else gives the message "unknown exception".
/// The type name is the demangled dynamic type (abi::__cxa_current_exception_type()).
/// Outside a catch block it returns remote_error("unknown", "no exception in flight").
/// @throws std::bad_alloc only.
remote_error capture_current_exception();

/// The exception a receiver should raise for e, so that a standard exception type is
/// caught as itself:
/// - a std::system_error (or a subclass such as std::ios_base::failure) becomes a
///   std::system_error with the original code: the same category object for "generic",
///   "system" and "coproc"; for any other category, a stand-in category of the same name()
///   whose message() gives the sender's text. what() reads as the original's;
/// - std::logic_error, std::invalid_argument, std::domain_error, std::length_error,
///   std::out_of_range, std::runtime_error, std::range_error, std::overflow_error,
///   std::underflow_error come back as that type with the original what();
///   std::bad_alloc, std::bad_cast, std::bad_typeid, std::bad_optional_access,
///   std::bad_variant_access, std::bad_function_call, std::bad_array_new_length,
///   std::bad_exception as that type (their what() is the library's);
/// - any other type (a user's class, a subclass of a standard one) stays e, a
///   remote_error whose type_name() names it.
std::exception_ptr to_exception_ptr(const remote_error& e);

/// Throws to_exception_ptr(e).
[[noreturn]] void rethrow(const remote_error& e);

}  // namespace coproc
