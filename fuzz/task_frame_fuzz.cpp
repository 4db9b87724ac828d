// libFuzzer target: what a worker decodes from a task frame (the callable and
// the arguments, coproc::detail::run_task) and what the parent decodes from a
// result frame (a value, or a remote_error turned back into an exception). A
// decode may only succeed or throw std::system_error with a frame error
// (frame_corrupt, frame_too_large, payload_too_large).
//
// Input: [selector][body...].

#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <tuple>
#include <variant>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "fuzz_support.hpp"

namespace {

/// Collects a task's encoded result, with a bound like the worker's arena.
class buffer_writer final : public coproc::detail::result_writer {
 public:
  std::span<std::byte> reserve(std::size_t n) override {
    if (n > (std::size_t{1} << 20)) {
      throw std::system_error(coproc::errc::payload_too_large, "fuzz result");
    }
    out_.resize(n);
    return out_;
  }
  void commit(std::size_t) override {}
  std::byte* reserve_emitted(std::size_t n) override { return reserve(n).data(); }
  void commit_emitted(std::size_t) override {}

 private:
  std::vector<std::byte> out_;
};

/// A trivially copyable functor: its bytes lead the task body.
struct scaled {
  std::int32_t factor;
  std::int64_t operator()(std::int64_t x, const std::string& s) const {
    // Unsigned: the fuzzer picks x and factor, and signed overflow is UB.
    return static_cast<std::int64_t>(
        static_cast<std::uint64_t>(x) * static_cast<std::uint64_t>(factor) + s.size());
  }
};

constexpr auto count_words = [](const std::vector<std::string>& words,
                                const std::optional<double>& weight) {
  return static_cast<double>(words.size()) * weight.value_or(1.0);
};
constexpr auto index_map = [](const std::map<std::string, std::vector<int>>& m,
                              std::variant<int, std::string> key) {
  return std::make_tuple(m.size(), key.index());
};
constexpr auto echo_bytes = [](std::vector<std::byte> b) { return b; };

template <class F, class... Args>
void run(std::span<const std::byte> body) {
  // A body shorter than its callable was a finding (regression test:
  // tests/reliability/ring_corruption_test.cpp): run_task must refuse it.
  buffer_writer out;
  try {
    coproc::detail::run_task<F, Args...>(body, out);
  } catch (const std::system_error& e) {
    coproc::fuzz::allow_only_frame_errors(e);
  }
}

template <class R>
void decode_result(std::span<const std::byte> body) {
  try {
    (void)coproc::decode_from<R>(body);
  } catch (const std::system_error& e) {
    coproc::fuzz::allow_only_frame_errors(e);
  }
}

/// The parent's path for an exception result: decode, map back, rethrow.
void decode_exception(std::span<const std::byte> body) {
  std::exception_ptr p;
  try {
    p = coproc::to_exception_ptr(coproc::decode_from<coproc::remote_error>(body));
  } catch (const std::system_error& e) {
    coproc::fuzz::allow_only_frame_errors(e);
    return;
  }
  try {
    std::rethrow_exception(p);
  } catch (const std::exception& e) {
    (void)std::string(e.what());  // what() must be readable
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  // Copy the body to its own exact-size allocation so ASan sees any overread.
  std::vector<std::byte> copy(reinterpret_cast<const std::byte*>(data) + 1,
                              reinterpret_cast<const std::byte*>(data) + size);
  std::span<const std::byte> body(copy.data(), copy.size());
  switch (data[0] % 8) {
    case 0:
      run<decltype(count_words), std::vector<std::string>, std::optional<double>>(body);
      break;
    case 1:
      run<scaled, std::int64_t, std::string>(body);
      break;
    case 2:
      run<decltype(index_map), std::map<std::string, std::vector<int>>,
          std::variant<int, std::string>>(body);
      break;
    case 3:
      run<decltype(echo_bytes), std::vector<std::byte>>(body);
      break;
    case 4:
      decode_exception(body);
      break;
    case 5:
      decode_result<std::tuple<std::size_t, std::size_t>>(body);
      break;
    case 6:
      decode_result<std::vector<std::byte>>(body);
      break;
    default:
      decode_result<std::map<std::string, std::optional<std::vector<double>>>>(body);
      break;
  }
  return 0;
}
