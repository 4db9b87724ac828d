#include "standard_exceptions.hpp"

#include <cxxabi.h>

#include <any>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <typeinfo>
#include <variant>

#include "coproc/ipc/detail/exception_prefix.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/worker_crashed_error.hpp"

namespace coproc::detail {
namespace {

template <class E>
std::exception_ptr with_message(const std::string& message) {
  return std::make_exception_ptr(E(message));
}
template <class E>
std::exception_ptr plain(const std::string&) {
  return std::make_exception_ptr(E());
}

using maker = std::exception_ptr (*)(const std::string&);

std::string demangle_type(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

// The types whose what() is the message they were built with.
bool rebuilt_takes_message(const std::string& name) {
  return name == "std::logic_error" || name == "std::invalid_argument" ||
         name == "std::domain_error" || name == "std::length_error" ||
         name == "std::out_of_range" || name == "std::runtime_error" ||
         name == "std::range_error" || name == "std::overflow_error" ||
         name == "std::underflow_error";
}

// The exact dynamic type only: a subclass (a user's, or the library's own) is not
// the type the caller would catch by its name, so it stays a remote_error.
const std::map<std::string, maker>& makers() {
  static const std::map<std::string, maker> table{
      {"std::logic_error", &with_message<std::logic_error>},
      {"std::invalid_argument", &with_message<std::invalid_argument>},
      {"std::domain_error", &with_message<std::domain_error>},
      {"std::length_error", &with_message<std::length_error>},
      {"std::out_of_range", &with_message<std::out_of_range>},
      {"std::runtime_error", &with_message<std::runtime_error>},
      {"std::range_error", &with_message<std::range_error>},
      {"std::overflow_error", &with_message<std::overflow_error>},
      {"std::underflow_error", &with_message<std::underflow_error>},
      {"std::bad_alloc", &plain<std::bad_alloc>},
      {"std::bad_array_new_length", &plain<std::bad_array_new_length>},
      {"std::bad_cast", &plain<std::bad_cast>},
      {"std::bad_typeid", &plain<std::bad_typeid>},
      {"std::bad_optional_access", &plain<std::bad_optional_access>},
      {"std::bad_variant_access", &plain<std::bad_variant_access>},
      {"std::bad_function_call", &plain<std::bad_function_call>},
      {"std::bad_any_cast", &plain<std::bad_any_cast>},
      {"std::bad_exception", &plain<std::bad_exception>},
  };
  return table;
}

class stand_in final : public std::error_category {
 public:
  explicit stand_in(std::string name) : name_(std::move(name)) {}
  const char* name() const noexcept override { return name_.c_str(); }
  std::string message(int value) const override {
    std::lock_guard<std::mutex> hold(mutex_);
    auto it = messages_.find(value);
    return it != messages_.end() ? it->second : name_ + " error " + std::to_string(value);
  }
  void learn(int value, const std::string& text) {
    std::lock_guard<std::mutex> hold(mutex_);
    messages_[value] = text;
  }

 private:
  std::string name_;
  mutable std::mutex mutex_;
  std::map<int, std::string> messages_;
};

}  // namespace

std::exception_ptr standard_exception(const std::string& type_name, const std::string& message) {
  auto it = makers().find(type_name);
  return it == makers().end() ? nullptr : it->second(message);
}

const std::error_category& stand_in_category(const std::string& name, int value,
                                             const std::string& message) {
  static std::mutex mutex;
  // Never freed: error_codes that refer to a category may outlive any owner.
  static auto* categories = new std::map<std::string, std::unique_ptr<stand_in>>();
  std::lock_guard<std::mutex> hold(mutex);
  auto& slot = (*categories)[name];
  if (!slot) {
    slot = std::make_unique<stand_in>(name);
  }
  if (!message.empty()) {
    slot->learn(value, message);
  }
  return *slot;
}

}  // namespace coproc::detail

namespace coproc::detail {
namespace {

// std::system_error's what() is "what_arg: code.message()" (or the message alone):
// the what_arg it was built with.
std::string what_arg_of(const std::system_error& e) {
  const std::string what = e.what();
  const std::string message = e.code().message();
  if (what == message) {
    return std::string();
  }
  const std::string tail = ": " + message;
  if (what.size() > tail.size() && what.ends_with(tail)) {
    return what.substr(0, what.size() - tail.size());
  }
  return what;
}

}  // namespace

std::exception_ptr with_prefix(std::exception_ptr error, const std::string& prefix) {
  if (!error) {
    return error;
  }
  try {
    std::rethrow_exception(error);
  } catch (const remote_error& e) {
    return std::make_exception_ptr(remote_error(
        e.type_name(), prefix + e.message(), e.category_name(), e.code_value(), e.code_message()));
  } catch (const worker_crashed_error& e) {
    return std::make_exception_ptr(
        worker_crashed_error(e.attempts(), prefix + what_arg_of(e), e.rank()));
  } catch (const std::system_error& e) {
    if (typeid(e) == typeid(std::system_error)) {
      return std::make_exception_ptr(std::system_error(e.code(), prefix + what_arg_of(e)));
    }
    return error;
  } catch (const std::exception& e) {
    const std::type_info* type = abi::__cxa_current_exception_type();
    if (type != nullptr) {
      auto it = makers().find(demangle_type(type->name()));
      if (it != makers().end() && rebuilt_takes_message(it->first)) {
        return it->second(prefix + e.what());
      }
    }
    return error;
  } catch (...) {
    return error;
  }
}

}  // namespace coproc::detail
