#include "coproc/ipc/remote_error.hpp"

#include <catch2/catch_test_macros.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "coproc/runtime/unique_fd.hpp"

namespace {

namespace app {
struct parse_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct not_a_std_exception {};
}  // namespace app

class odd_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "odd"; }
  std::string message(int) const override { return "odd failure"; }
};
const odd_category odd;

template <class Throw>
coproc::remote_error capture(Throw&& do_throw) {
  try {
    do_throw();
  } catch (...) {
    return coproc::capture_current_exception();
  }
  FAIL("nothing was thrown");
  return coproc::remote_error("", "");
}

coproc::remote_error through_codec(const coproc::remote_error& e) {
  return coproc::decode_from<coproc::remote_error>(coproc::encode_to_vector(e));
}

}  // namespace

TEST_CASE("remote_error names the type and the message", "[remote_error]") {
  const coproc::remote_error e("std::out_of_range", "index 7");
  CHECK(e.type_name() == "std::out_of_range");
  CHECK(e.message() == "index 7");
  CHECK(std::string(e.what()) == "std::out_of_range: index 7");
  CHECK(e.category_name().empty());
  STATIC_CHECK(std::is_base_of_v<std::runtime_error, coproc::remote_error>);
  STATIC_CHECK(std::is_nothrow_copy_constructible_v<coproc::remote_error>);
}

TEST_CASE("capture_current_exception demangles the thrown type", "[remote_error]") {
  const auto std_error = capture([] { throw std::out_of_range("too far"); });
  CHECK(std_error.type_name() == "std::out_of_range");
  CHECK(std_error.message() == "too far");
  CHECK(std::string(std_error.what()) == "std::out_of_range: too far");

  const auto user = capture([] { throw app::parse_error("bad token"); });
  CHECK(user.type_name() == "(anonymous namespace)::app::parse_error");
  CHECK(user.message() == "bad token");

  const auto integer = capture([] { throw 42; });
  CHECK(integer.type_name() == "int");
  CHECK(integer.message() == "unknown exception");

  const auto odd_type = capture([] { throw app::not_a_std_exception{}; });
  CHECK(odd_type.type_name() == "(anonymous namespace)::app::not_a_std_exception");
  CHECK(odd_type.message() == "unknown exception");
}

TEST_CASE("capture_current_exception passes a remote_error through", "[remote_error]") {
  const auto e = capture([] { throw coproc::remote_error("inner::type", "deep"); });
  CHECK(e.type_name() == "inner::type");
  CHECK(e.message() == "deep");
}

TEST_CASE("capture_current_exception outside a catch block", "[remote_error]") {
  const auto e = coproc::capture_current_exception();
  CHECK(e.type_name() == "unknown");
}

TEST_CASE("remote_error round trips through the codec", "[remote_error]") {
  const auto original =
      capture([] { throw std::system_error(EPIPE, std::generic_category(), "write"); });
  const auto copy = through_codec(original);
  CHECK(copy.type_name() == original.type_name());
  CHECK(copy.message() == original.message());
  CHECK(copy.category_name() == "generic");
  CHECK(copy.code_value() == EPIPE);
  CHECK(std::string(copy.what()) == original.what());
  // Nested in a standard container, as a pool's result slot would hold it.
  using result = std::variant<int, coproc::remote_error>;
  const auto decoded = coproc::decode_from<result>(coproc::encode_to_vector(result(copy)));
  REQUIRE(decoded.index() == 1);
  CHECK(std::get<1>(decoded).message() == original.message());
}

TEST_CASE("rethrow restores a system_error of a known category", "[remote_error]") {
  const auto check_restored = [](const std::system_error& thrown) {
    const auto e = through_codec(capture([&] { throw thrown; }));
    try {
      coproc::rethrow(e);
    } catch (const coproc::remote_error&) {
      FAIL("a known category came back as remote_error");
    } catch (const std::system_error& back) {
      CHECK(back.code() == thrown.code());
      CHECK(std::string(back.what()) == thrown.what());
    }
  };
  check_restored(std::system_error(ENOENT, std::generic_category(), "open /nowhere"));
  check_restored(std::system_error(ENOMEM, std::system_category()));
  check_restored(std::system_error(coproc::errc::worker_crashed));
  check_restored(std::system_error(coproc::errc::task_timeout, "task 3"));
}

TEST_CASE("rethrow restores any category and standard types, remote_error for the rest",
          "[remote_error]") {
  const auto odd_error = capture([] { throw std::system_error(3, odd, "custom"); });
  CHECK(odd_error.category_name() == "odd");
  try {
    coproc::rethrow(through_codec(odd_error));
    FAIL("no exception");
  } catch (const coproc::remote_error&) {
    FAIL("an unknown category came back as remote_error");
  } catch (const std::system_error& e) {  // a stand-in category of the same name
    CHECK(std::string(e.code().category().name()) == "odd");
    CHECK(e.code().value() == 3);
    CHECK(std::string(e.what()) == "custom: odd failure");
  }
  try {
    coproc::rethrow(through_codec(capture([] { throw std::logic_error("nope"); })));
    FAIL("no exception");
  } catch (const coproc::remote_error&) {
    FAIL("a standard type came back as remote_error");
  } catch (const std::logic_error& e) {
    CHECK(typeid(e) == typeid(std::logic_error));
    CHECK(std::string(e.what()) == "nope");
  }
  try {
    coproc::rethrow(through_codec(capture([] { throw app::parse_error("line 2"); })));
    FAIL("no exception");
  } catch (const coproc::remote_error& e) {
    CHECK(e.message() == "line 2");
  }
}

TEST_CASE("an exception crosses a real process boundary", "[remote_error]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  coproc::unique_fd read_end(fds[0]);
  coproc::unique_fd write_end(fds[1]);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Child: no Catch2 here; report through the pipe and leave with _exit.
    read_end.reset();
    std::vector<std::byte> frame;
    try {
      throw app::parse_error("line 3");
    } catch (...) {
      frame = coproc::encode_to_vector(coproc::capture_current_exception());
    }
    const auto size = static_cast<std::uint64_t>(frame.size());
    bool ok =
        ::write(write_end.get(), &size, sizeof(size)) == sizeof(size) &&
        ::write(write_end.get(), frame.data(), frame.size()) == static_cast<ssize_t>(frame.size());
    ::_exit(ok ? 0 : 1);
  }
  write_end.reset();
  std::uint64_t size = 0;
  REQUIRE(::read(read_end.get(), &size, sizeof(size)) == sizeof(size));
  REQUIRE(size < 4096);
  std::vector<std::byte> frame(size);
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(read_end.get(), frame.data() + got, size - got);
    REQUIRE(n > 0);
    got += static_cast<std::size_t>(n);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const auto e = coproc::decode_from<coproc::remote_error>(frame);
  CHECK(e.type_name() == "(anonymous namespace)::app::parse_error");
  CHECK(std::string(e.what()) == "(anonymous namespace)::app::parse_error: line 3");
}
