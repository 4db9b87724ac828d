#include "coproc/runtime/errc.hpp"

#include <catch2/catch_test_macros.hpp>

TEST_CASE("errc converts to an error_code of the coproc category", "[errc]") {
  std::error_code ec = coproc::errc::task_timeout;
  CHECK(ec.category().name() == std::string("coproc"));
  CHECK(ec.message() == "task timed out");
  CHECK(ec == coproc::errc::task_timeout);
  CHECK(ec != coproc::errc::worker_crashed);
}

TEST_CASE("system_error carries the coproc code", "[errc]") {
  try {
    throw std::system_error(coproc::errc::pool_stopped);
  } catch (const std::system_error& e) {
    CHECK(e.code() == coproc::errc::pool_stopped);
  }
}

TEST_CASE("pool_broken is a code of its own with its message", "[errc]") {
  std::error_code ec = coproc::errc::pool_broken;
  CHECK(ec.message() == "the pool is broken: it cannot start workers");
  CHECK(ec != coproc::errc::pool_stopped);
  CHECK(ec != coproc::errc::worker_crashed);
}
