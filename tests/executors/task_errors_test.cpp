// What a failed task throws in the caller (issue 14 item 6): standard exception types as
// themselves, std::system_error of any category with its code, other types as
// remote_error; a crashed worker's status as data; a failed map naming its items.
#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <csignal>
#include <ios>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "async_test.hpp"
#include "coproc/coproc.hpp"

namespace {

struct parse_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int throws_invalid(int) {
  throw std::invalid_argument("bad input 3");
}
int throws_runtime(int) {
  throw std::runtime_error("boom");
}
int throws_user(int) {
  throw parse_error("line 4");
}
int throws_io_failure(int) {  // a std::system_error of the "iostream" category
  throw std::ios_base::failure("reading x", std::io_errc::stream);
}
int throws_system(int) {
  throw std::system_error(std::make_error_code(std::errc::permission_denied), "opening x");
}
int crash_on(int x) {
  if (x == 13) {
    std::raise(SIGSEGV);
  }
  return x;
}
int fail_on(int x) {
  if (x == 13) {
    throw std::out_of_range("thirteen");
  }
  return x;
}

}  // namespace

TEST_CASE("standard exceptions arrive as their own type", "[process_pool][errors]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    try {
      co_await pool.submit(throws_invalid, 1);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()) == "bad input 3");
    }
    try {
      co_await pool.submit(throws_runtime, 1);
      FAIL("no exception");
    } catch (const std::runtime_error& e) {
      CHECK(typeid(e) == typeid(std::runtime_error));
      CHECK(std::string(e.what()) == "boom");
    }
    try {
      co_await pool.submit(throws_user, 1);
      FAIL("no exception");
    } catch (const coproc::remote_error& e) {  // not a standard type: named
      CHECK(e.type_name() == "(anonymous namespace)::parse_error");
      CHECK(e.message() == "line 4");
    }
  });
}

TEST_CASE("a std::system_error of any category keeps its code", "[process_pool][errors]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    const std::ios_base::failure original("reading x", std::io_errc::stream);
    try {
      co_await pool.submit(throws_io_failure, 1);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(std::string(e.code().category().name()) == "iostream");
      CHECK(e.code().value() == static_cast<int>(std::io_errc::stream));
      CHECK(e.code().message() == original.code().message());
      CHECK(std::string(e.what()) == original.what());
    }
    try {
      co_await pool.submit(throws_system, 1);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::permission_denied);
      CHECK(std::string(e.what()).starts_with("opening x"));
    }
  });
}

TEST_CASE("worker_crashed_error carries the signal and max RSS", "[process_pool][errors]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    try {
      co_await pool.submit(crash_on, 13);
      FAIL("no exception");
    } catch (const coproc::worker_crashed_error& e) {
      CHECK(e.code() == coproc::errc::worker_crashed);
      CHECK_FALSE(e.status().exited);
      CHECK(e.status().signal == SIGSEGV);
      CHECK(e.status().max_rss_kb > 0);
    }
  });
}

TEST_CASE("a failed map names the items of the failed chunk", "[process_pool][errors]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx, {.workers = 1});
    std::vector<int> in;
    for (int i = 0; i < 20; ++i) {
      in.push_back(i);
    }
    try {
      co_await pool.map(fail_on, in, 5);
      FAIL("no exception");
    } catch (const std::out_of_range& e) {
      CHECK(std::string(e.what()) == "coproc::map: items [10, 15) of 20 failed: thirteen");
    }
    try {
      co_await pool.map(crash_on, in, 4);
      FAIL("no exception");
    } catch (const coproc::worker_crashed_error& e) {
      CHECK(std::string(e.what()).starts_with("coproc::map: items [12, 16) of 20 failed: "));
      CHECK(e.status().signal == SIGSEGV);
    }
  });
}
