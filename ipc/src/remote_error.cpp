#include "coproc/ipc/remote_error.hpp"

#include "standard_exceptions.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <exception>
#include <typeinfo>

namespace coproc {
namespace {

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

std::string compose_what(const std::string& type_name, const std::string& message) {
  return type_name + ": " + message;
}

const std::error_category* known_category(const std::string& name) {
  if (name == std::generic_category().name()) {
    return &std::generic_category();
  }
  if (name == std::system_category().name()) {
    return &std::system_category();
  }
  if (name == coproc::error_category().name()) {
    return &coproc::error_category();
  }
  return nullptr;
}

}  // namespace

remote_error::remote_error(std::string type_name, std::string message)
    : remote_error(std::move(type_name), std::move(message), std::string(), 0) {}

remote_error::remote_error(std::string type_name, std::string message, std::string category_name,
                           int code_value, std::string code_message)
    : std::runtime_error(compose_what(type_name, message)),
      data_(std::make_shared<const data>(data{std::move(type_name), std::move(message),
                                              std::move(category_name), code_value,
                                              std::move(code_message)})) {}

remote_error capture_current_exception() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  std::exception_ptr current = std::current_exception();
  if (type == nullptr || !current) {
    return remote_error("unknown", "no exception in flight");
  }
  const std::string type_name = demangle(type->name());
  try {
    std::rethrow_exception(current);
  } catch (const remote_error& e) {
    return e;
  } catch (const std::system_error& e) {
    return remote_error(type_name, e.what(), e.code().category().name(), e.code().value(),
                        e.code().message());
  } catch (const std::exception& e) {
    return remote_error(type_name, e.what());
  } catch (...) {
    return remote_error(type_name, "unknown exception");
  }
}

std::exception_ptr to_exception_ptr(const remote_error& e) {
  const std::error_category* category = known_category(e.category_name());
  if (category == nullptr && !e.category_name().empty()) {
    category = &detail::stand_in_category(e.category_name(), e.code_value(), e.code_message());
  }
  if (category != nullptr) {
    const std::error_code code(e.code_value(), *category);
    // std::system_error(code, what_arg).what() is "what_arg: code.message()"; recover
    // what_arg so the rethrown what() reads as the original did.
    const std::string suffix = code.message();
    const std::string& message = e.message();
    if (message == suffix) {
      return std::make_exception_ptr(std::system_error(code));
    }
    const std::string tail = ": " + suffix;
    if (message.size() > tail.size() && message.ends_with(tail)) {
      return std::make_exception_ptr(
          std::system_error(code, message.substr(0, message.size() - tail.size())));
    }
    return std::make_exception_ptr(std::system_error(code, message));
  }
  if (std::exception_ptr standard = detail::standard_exception(e.type_name(), e.message())) {
    return standard;
  }
  return std::make_exception_ptr(e);
}

void rethrow(const remote_error& e) {
  std::rethrow_exception(to_exception_ptr(e));
}

}  // namespace coproc
