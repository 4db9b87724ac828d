// Issue 13.2: the parent trusts no word a worker can write in the pool's
// shared memory. A task that rewrites the header words of its own rings
// (capacity, head, tail), or that writes random bytes over every writable
// shared mapping it can find, must fail alone (errc::frame_corrupt or
// errc::worker_crashed): the host neither crashes nor hangs, and the pool
// goes on running tasks. Each check runs in a forked host (isolated_run.hpp).

#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "async_test.hpp"
#include "coproc/executors/detail/pool_layout.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/uring_service.hpp"
#include "isolated_run.hpp"

namespace {

using coproc::process_pool;

constexpr std::size_t ring_bytes = std::size_t{1} << 16;
constexpr std::size_t max_payload = std::size_t{1} << 20;

struct mapping {
  std::byte* begin = nullptr;
  std::size_t size = 0;
  std::string perms;
  std::string path;
};

/// This process's mappings, from /proc/self/maps.
std::vector<mapping> own_mappings() {
  std::vector<mapping> out;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    unsigned long begin = 0, end = 0;
    char perms[5] = {};
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %4s %*s %*s %*s %n", &begin, &end, perms, &path_at) <
        3) {
      continue;
    }
    out.push_back({reinterpret_cast<std::byte*>(begin), end - begin, perms,
                   path_at > 0 ? line.substr(static_cast<std::size_t>(path_at)) : ""});
  }
  return out;
}

/// The pool's shared mapping as this worker sees it (its slot 0: one worker).
coproc::detail::slot_channel own_slot() {
  for (const mapping& m : own_mappings()) {
    if (m.path.find("memfd:coproc-pool") != std::string::npos) {
      coproc::detail::pool_geometry g{1, ring_bytes, max_payload};
      return coproc::detail::slot_at(m.begin, g, 0);
    }
  }
  ::_exit(77);  // no pool mapping: the test is wrong, not the pool
}

enum scribble : int { result_header_then_die, result_header_then_return, task_header_then_return };

/// A task that rewrites its ring header words in the shared mapping.
int rewrite_header(int how) {
  coproc::detail::slot_channel v = own_slot();
  coproc::shm_ring_header& h = how == task_header_then_return ? v.shared->tasks : v.shared->results;
  h.capacity = std::uint64_t{1} << 40;
  h.tail.store(std::uint64_t{1} << 39);
  h.head.store((std::uint64_t{1} << 39) + 64);
  if (how == result_header_then_die) {
    ::raise(SIGKILL);
  }
  return 7;
}

/// A task that writes random bytes over every writable shared mapping.
int scribble_everything(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (const mapping& m : own_mappings()) {
    if (m.perms.size() == 4 && m.perms[1] == 'w' && m.perms[3] == 's') {
      auto* words = reinterpret_cast<std::uint64_t*>(m.begin);
      for (std::size_t i = 0; i < m.size / sizeof(std::uint64_t); ++i) {
        words[i] = rng();
      }
    }
  }
  return 1;
}

int twice(int x) {
  return 2 * x;
}

bool expected_failure(const std::system_error& e) {
  return e.code() == coproc::errc::frame_corrupt || e.code() == coproc::errc::worker_crashed;
}

/// Exit codes of the host for the header checks.
enum verdict : int { ok = 0, wrong_error = 2, no_error = 3, next_task_failed = 4 };

int host_survives_header_rewrite(int how) {
  int result = ok;
  coproc::test::run_async(
      [&](asio::io_context& ctx) -> asio::awaitable<void> {
        process_pool pool(ctx.get_executor(),
                          {.workers = 1, .ring_bytes = ring_bytes, .max_payload = max_payload});
        try {
          int v = co_await pool.submit(rewrite_header, how);
          // The worker may have published its value before the parent looked.
          result = how == result_header_then_die || v != 7 ? no_error : ok;
        } catch (const std::system_error& e) {
          result = expected_failure(e) ? ok : wrong_error;
        }
        for (int i = 0; i < 3; ++i) {
          try {
            if (co_await pool.submit(twice, i) != 2 * i) {
              result = next_task_failed;
            }
          } catch (const std::system_error& e) {
            // A task sent to the corrupt worker before it was caught fails with it.
            if (!expected_failure(e) || i == 2) {
              result = next_task_failed;
            }
          }
        }
      },
      std::chrono::seconds(20));
  return result;
}

}  // namespace

TEST_CASE("a task that rewrites its result ring header and dies does not crash the host",
          "[reliability][ring_trust]") {
  auto out = coproc::test::run_isolated(
      [] { return host_survives_header_rewrite(result_header_then_die); });
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("a task that rewrites its result ring header and returns does not crash the host",
          "[reliability][ring_trust]") {
  auto out = coproc::test::run_isolated(
      [] { return host_survives_header_rewrite(result_header_then_return); });
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("a task that rewrites its task ring header does not crash the host",
          "[reliability][ring_trust]") {
  auto out = coproc::test::run_isolated(
      [] { return host_survives_header_rewrite(task_header_then_return); });
  INFO("host " << out.describe());
  CHECK(out.passed());
}

TEST_CASE("tasks that write random bytes over every shared mapping neither crash nor hang the host",
          "[reliability][ring_trust]") {
  auto out = coproc::test::run_isolated(
      [] {
        int result = 0;
        coproc::test::run_async(
            [&](asio::io_context& ctx) -> asio::awaitable<void> {
              // The loop's ring exists before the pool: a forked zygote would
              // inherit its shared mappings, and a task could scribble them.
              (void)coproc::uring_service::of(ctx.get_executor());
              process_pool pool(ctx.get_executor(), {.workers = 2,
                                                     .task_timeout = std::chrono::seconds(5),
                                                     .ring_bytes = ring_bytes,
                                                     .max_payload = max_payload});
              auto ex = ctx.get_executor();
              for (std::uint64_t round = 0; round < 12; ++round) {
                auto pending = std::make_shared<int>(0);
                auto bad = std::make_shared<int>(0);
                asio::steady_timer all_done(ex, std::chrono::steady_clock::time_point::max());
                auto done = [&all_done, pending, bad](bool fine) {
                  *bad += fine ? 0 : 1;
                  if (--*pending == 0) {
                    all_done.cancel();
                  }
                };
                for (int i = 0; i < 8; ++i) {
                  ++*pending;
                  if (i == 3) {
                    pool.async_submit(scribble_everything, round + 1,
                                      [done](std::exception_ptr, int) { done(true); });
                    continue;
                  }
                  pool.async_submit(twice, i, [done, i](std::exception_ptr e, int v) {
                    bool fine = !e && v == 2 * i;
                    if (e) {
                      try {
                        std::rethrow_exception(e);
                      } catch (const std::system_error& se) {
                        fine = expected_failure(se);
                      } catch (...) {
                      }
                    }
                    done(fine);
                  });
                }
                std::error_code ec;
                co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                if (*bad != 0) {
                  result = 2;
                }
              }
              // The pool still works: eight clean tasks in a row succeed.
              int clean = 0;
              for (int i = 0; i < 64 && clean < 8; ++i) {
                try {
                  clean = co_await pool.submit(twice, i) == 2 * i ? clean + 1 : 0;
                } catch (const std::system_error& e) {
                  std::fprintf(stderr, "after the scribbling: %s\n", e.what());
                  clean = 0;
                }
              }
              if (clean < 8) {
                result = 3;
              }
              auto st = pool.stats();
              std::fprintf(stderr,
                           "scribbling: %llu tasks failed, %llu worker crashes, %llu respawns\n",
                           static_cast<unsigned long long>(st.tasks_failed),
                           static_cast<unsigned long long>(st.worker_crashes),
                           static_cast<unsigned long long>(st.respawns));
            },
            std::chrono::seconds(60));
        return result;
      },
      std::chrono::seconds(90));
  INFO("host " << out.describe());
  CHECK(out.passed());
}

namespace {

/// A result that travels through the output arena (above the 64 KiB inline limit).
std::vector<char> large_result(int fill) {
  return std::vector<char>(100'000, static_cast<char>(fill));
}

/// Overwrites its slot's output-arena busy word, then returns a large result.
std::vector<char> jam_arena_then_large(int fill) {
  own_slot().shared->out_arena_busy.store(7);
  return large_result(fill);
}

}  // namespace

TEST_CASE("a task that overwrites the output arena's busy word stalls no result",
          "[reliability][ring_trust]") {
  // The worker waited for that word to read 0 before using the arena; a
  // task that wrote another value there left it spinning for ever, and every
  // later large result of that worker with it.
  auto out = coproc::test::run_isolated(
      [] {
        int result = 0;
        coproc::test::run_async(
            [&](asio::io_context& ctx) -> asio::awaitable<void> {
              process_pool pool(
                  ctx.get_executor(),
                  {.workers = 1, .ring_bytes = ring_bytes, .max_payload = max_payload});
              (void)co_await pool.submit(large_result, 1);  // the arena used once
              for (int i = 2; i < 6; ++i) {
                try {
                  auto v = co_await pool.submit(i == 2 ? jam_arena_then_large : large_result, i);
                  if (v.size() != 100'000 || v[0] != static_cast<char>(i)) {
                    result = 2;
                  }
                } catch (const std::system_error& e) {
                  if (!expected_failure(e)) {
                    result = 3;
                  }
                }
              }
            },
            std::chrono::seconds(10));
        return result;
      },
      std::chrono::seconds(20));
  INFO("host " << out.describe());
  CHECK(out.passed());
}

namespace {

/// Clears the words that say which task its worker ran, then dies: the
/// parent would take the task for one never started and send it again.
int hide_then_die(int how) {
  coproc::detail::slot_channel v = own_slot();
  v.shared->running_id.store(0);
  v.shared->consumed.store(0);
  if (how == 1) {
    v.shared->retiring.store(1);
    ::_exit(0);  // as a worker that retires after its last result
  }
  ::raise(SIGKILL);
  return 0;
}

}  // namespace

TEST_CASE("a task that hides that it ran, then kills its worker, fails instead of running for ever",
          "[reliability][ring_trust]") {
  for (int how : {0, 1}) {
    auto out = coproc::test::run_isolated(
        [how] {
          int result = 0;
          coproc::test::run_async(
              [&](asio::io_context& ctx) -> asio::awaitable<void> {
                process_pool pool(
                    ctx.get_executor(),
                    {.workers = 1, .ring_bytes = ring_bytes, .max_payload = max_payload});
                try {
                  co_await pool.submit(hide_then_die, how);
                  result = 2;
                } catch (const std::system_error& e) {
                  result = e.code() == coproc::errc::worker_crashed ? 0 : 3;
                }
                if (co_await pool.submit(twice, 4) != 8) {
                  result = 4;
                }
              },
              std::chrono::seconds(10));
          return result;
        },
        std::chrono::seconds(20));
    INFO((how == 0 ? "SIGKILL" : "_exit(0) with retiring set") << ": host " << out.describe());
    CHECK(out.passed());
  }
}
