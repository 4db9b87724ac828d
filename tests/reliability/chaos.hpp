#pragma once
// The chaos run shared by tests/reliability/chaos_test.cpp (short) and
// tests/reliability/chaos_run.cpp (`./x chaos`, full): many small tasks
// through a process_pool while workers die from outside (signals sent to
// pids from pool.stats().worker_pids) and from inside (tasks that crash on
// purpose: SIGSEGV, abort, _exit, SIGKILL), and, with hostile_every set,
// from tasks that misbehave against their own process (issue 13: scribble the
// rings, close every fd, kill their process group, fork lingering
// grandchildren, clear the death signal). Every task must complete exactly
// once, with its value or with errc::worker_crashed (errc::frame_corrupt for
// scribbled rings), and a final batch with no faults must all succeed.

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "coproc/executors/detail/pool_layout.hpp"
#include "coproc/executors/process_pool.hpp"
#include "coproc/runtime/errc.hpp"
#include "pool_mapping.hpp"

namespace coproc::test::chaos {

/// The ordinary task: a value the parent can check, after a few microseconds
/// of work so that outside kills often land on a running task.
inline std::int64_t work(std::int64_t x) {
  volatile std::int64_t spin = 4000;
  while (spin > 0) {
    spin = spin - 1;
  }
  return x * 3 + 1;
}

enum crash_kind : int { by_segv, by_abort, by_exit, by_sigkill, crash_kinds };

/// Issue 13: tasks that misbehave against their own process without
/// crashing on purpose. Each returns work(x) if it gets that far; what
/// holds is that it completes once, with that value or with
/// errc::worker_crashed / errc::frame_corrupt, and that the host neither
/// dies, nor hangs, nor keeps a process after the pool.
enum hostile_kind : int {
  scribble_rings,      ///< overwrites the result ring header words of every slot
  close_all_fds,       ///< closes fds 0..1023
  kill_own_group,      ///< kill(0, SIGTERM)
  fork_lingering,      ///< forks a sleeping child and a grandchild in its own session
  clear_death_signal,  ///< prctl(PR_SET_PDEATHSIG, 0)
  hostile_kinds
};

namespace detail {

using coproc::test::pool_mapping;

/// Garbage in the capacity, head and tail words of every slot's result ring
/// (a pool made with the default ring_bytes and max_payload).
inline void scribble_result_headers(std::uint64_t noise) {
  auto [base, size] = pool_mapping();
  coproc::pool_options defaults;
  coproc::detail::pool_geometry g{1, defaults.ring_bytes, defaults.max_payload};
  if (base == nullptr || size < g.header_bytes()) {
    return;
  }
  g.slots = (size - g.header_bytes()) / g.slot_bytes();
  for (std::size_t i = 0; i < g.slots; ++i) {
    coproc::detail::slot_channel v = coproc::detail::slot_at(base, g, i);
    v.shared->results.capacity = noise | 1;
    v.shared->results.head.store(noise * 3);
    v.shared->results.tail.store(noise * 7);
  }
}

}  // namespace detail

/// A hostile task (see hostile_kind).
inline std::int64_t hostile(int kind, std::int64_t x) {
  switch (kind) {
    case scribble_rings:
      detail::scribble_result_headers(static_cast<std::uint64_t>(x) * 0x9e3779b97f4a7c15ULL);
      break;
    case close_all_fds:
      for (int fd = 0; fd < 1024; ++fd) {
        ::close(fd);
      }
      break;
    case kill_own_group:
      ::kill(0, SIGTERM);
      break;
    case fork_lingering:
      if (::fork() == 0) {
        if (::fork() == 0) {
          ::setsid();
        }
        for (;;) {
          ::pause();
        }
      }
      break;
    default:
      ::prctl(PR_SET_PDEATHSIG, 0);
      break;
  }
  return work(x);
}

/// A task that kills its own worker.
inline std::int64_t crash(int kind) {
  switch (kind) {
    case by_segv:
      ::raise(SIGSEGV);
      break;
    case by_abort:
      std::abort();
    case by_exit:
      ::_exit(3);
    default:
      ::raise(SIGKILL);
      break;
  }
  return -1;
}

struct config {
  std::size_t tasks = 5000;
  std::size_t window = 32;        ///< tasks in flight at most
  std::size_t fault_every = 100;  ///< one fault (outside kill or crashing task) per this many tasks
  std::size_t final_batch = 200;  ///< tasks run after the faults, all of which must succeed
  /// One hostile task (hostile_kind, in turn) per this many tasks (0: none).
  std::size_t hostile_every = 0;
  std::uint64_t seed = 1;
  std::chrono::seconds deadline{
      60};  ///< for the whole run: tasks still pending then are "unfinished"
};

struct result {
  std::size_t submitted = 0;
  std::size_t succeeded = 0;
  std::size_t crashed = 0;          ///< failed with errc::worker_crashed
  std::size_t corrupt = 0;          ///< failed with errc::frame_corrupt (rings scribbled)
  std::size_t hostile = 0;          ///< hostile tasks submitted
  std::size_t other_errors = 0;     ///< failed with anything else
  std::size_t wrong_values = 0;     ///< succeeded with a value that is not work(i)
  std::size_t crash_succeeded = 0;  ///< a crashing task that reported a value
  std::size_t duplicates = 0;       ///< completions past the first for one task
  std::size_t unfinished = 0;       ///< never completed before the deadline
  std::size_t outside_kills = 0;    ///< signals sent to worker pids
  std::size_t inside_crashes = 0;   ///< crashing tasks submitted
  std::uint64_t respawns = 0;
  std::uint64_t worker_crashes = 0;
  std::size_t final_ok = 0;
  std::size_t final_total = 0;
  double seconds = 0;
  std::string first_error;

  bool ok() const {
    return succeeded + crashed + corrupt == submitted && other_errors == 0 && wrong_values == 0 &&
           crash_succeeded == 0 && duplicates == 0 && unfinished == 0 && final_ok == final_total;
  }

  void print(std::FILE* out) const {
    std::fprintf(out,
                 "chaos: submitted %zu, succeeded %zu, crashed %zu, corrupt %zu, other errors %zu, "
                 "wrong values %zu, duplicates %zu, unfinished %zu\n"
                 "chaos: faults: outside kills %zu, crashing tasks %zu, hostile tasks %zu; pool: "
                 "worker_crashes %llu, respawns %llu\n"
                 "chaos: final batch %zu/%zu succeeded; %.2f s%s%s\n",
                 submitted, succeeded, crashed, corrupt, other_errors, wrong_values, duplicates,
                 unfinished, outside_kills, inside_crashes, hostile,
                 static_cast<unsigned long long>(worker_crashes),
                 static_cast<unsigned long long>(respawns), final_ok, final_total, seconds,
                 first_error.empty() ? "" : "; first unexpected error: ", first_error.c_str());
  }
};

namespace detail {

struct run_state {
  explicit run_state(const asio::any_io_executor& ex, std::size_t n) : wake(ex), seen(n, 0) {}
  asio::steady_timer wake;
  std::vector<std::uint8_t> seen;
  std::size_t inflight = 0;
  result r;
};

/// Waits until `ready()` or the deadline; false at the deadline.
/// Completion handlers cancel `st.wake`; with `poll` set, the condition is
/// also re-read at that interval (for state no handler announces).
template <class Ready>
asio::awaitable<bool> wait_until(run_state& st, std::chrono::steady_clock::time_point deadline,
                                 Ready ready,
                                 std::chrono::milliseconds poll = std::chrono::milliseconds(0)) {
  while (!ready()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      co_return false;
    }
    st.wake.expires_at(poll.count() != 0 ? std::min(deadline, now + poll) : deadline);
    std::error_code ec;
    co_await st.wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return true;
}

inline std::string describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& se) {
    return std::string("system_error ") + se.code().category().name() + ":" +
           std::to_string(se.code().value()) + " " + se.what();
  } catch (const std::exception& ex) {
    return std::string("exception ") + ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

inline bool is_worker_crashed(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& se) {
    return se.code() == coproc::errc::worker_crashed;
  } catch (...) {
    return false;
  }
}

inline bool is_frame_corrupt(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& se) {
    return se.code() == coproc::errc::frame_corrupt;
  } catch (...) {
    return false;
  }
}

}  // namespace detail

// GCC 12 reports a mismatched delete in this coroutine's frame (asio's
// awaitable_frame_base operator delete against its own operator new): a
// false positive that comes and goes with the frame's size.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
/// Runs the chaos schedule on `pool` (whose executor runs this coroutine).
inline asio::awaitable<result> run(process_pool& pool, config cfg) {
  auto ex = co_await asio::this_coro::executor;
  auto st = std::make_shared<detail::run_state>(ex, cfg.tasks);
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + cfg.deadline;
  std::mt19937_64 rng(cfg.seed);
  std::set<pid_t> killed;
  const int outside_signals[] = {SIGKILL, SIGSEGV, SIGABRT, SIGTERM, SIGBUS};

  for (std::size_t i = 0; i < cfg.tasks; ++i) {
    if (!co_await detail::wait_until(*st, deadline, [&] { return st->inflight < cfg.window; })) {
      break;
    }
    bool fault = cfg.fault_every != 0 && i % cfg.fault_every == cfg.fault_every / 2;
    bool inside = fault && (rng() & 1) != 0;
    bool hostile_task = !fault && cfg.hostile_every != 0 && i % cfg.hostile_every == 0 && i != 0;
    if (fault && !inside) {
      std::vector<pid_t> pids = pool.stats().worker_pids;
      if (!pids.empty()) {
        pid_t victim = pids[rng() % pids.size()];
        int sig = outside_signals[rng() % std::size(outside_signals)];
        if (::kill(victim, sig) == 0) {
          ++st->r.outside_kills;
          killed.insert(victim);
        }
      }
    }
    ++st->inflight;
    ++st->r.submitted;
    auto handler = [st, i, inside](std::exception_ptr e, std::int64_t v) {
      auto& r = st->r;
      if (st->seen[i]++ != 0) {
        ++r.duplicates;
        return;
      }
      --st->inflight;
      st->wake.cancel();
      if (!e) {
        if (inside) {
          ++r.crash_succeeded;
        } else if (v != work(static_cast<std::int64_t>(i))) {
          ++r.wrong_values;
        } else {
          ++r.succeeded;
        }
      } else if (detail::is_worker_crashed(e)) {
        ++r.crashed;
      } else if (detail::is_frame_corrupt(e)) {
        ++r.corrupt;
      } else {
        ++r.other_errors;
        if (r.first_error.empty()) {
          r.first_error = detail::describe(e);
        }
      }
    };
    if (inside) {
      ++st->r.inside_crashes;
      pool.async_submit(crash, static_cast<int>(rng() % crash_kinds),
                        asio::bind_executor(ex, handler));
    } else if (hostile_task) {
      int kind = static_cast<int>(st->r.hostile++ % hostile_kinds);
      pool.async_submit(hostile, kind, static_cast<std::int64_t>(i),
                        asio::bind_executor(ex, handler));
    } else {
      pool.async_submit(work, static_cast<std::int64_t>(i), asio::bind_executor(ex, handler));
    }
  }
  co_await detail::wait_until(*st, deadline, [&] { return st->inflight == 0; });
  st->r.unfinished = st->inflight;

  // Health: once every killed worker has been seen dead and replaced, a
  // batch with no faults must all succeed.
  co_await detail::wait_until(
      *st, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(5)),
      [&] {
        auto s = pool.stats();
        for (pid_t p : s.worker_pids) {
          if (killed.count(p) != 0) {
            return false;
          }
        }
        return s.workers_alive == pool.size();
      },
      std::chrono::milliseconds(1));
  auto final_state = std::make_shared<detail::run_state>(ex, cfg.final_batch);
  for (std::size_t i = 0; i < cfg.final_batch; ++i) {
    ++final_state->inflight;
    pool.async_submit(
        work, static_cast<std::int64_t>(i),
        asio::bind_executor(ex, [final_state, i](std::exception_ptr e, std::int64_t v) {
          --final_state->inflight;
          final_state->r.succeeded += !e && v == work(static_cast<std::int64_t>(i));
          final_state->wake.cancel();
        }));
  }
  co_await detail::wait_until(*final_state, deadline + std::chrono::seconds(10),
                              [&] { return final_state->inflight == 0; });
  result r = st->r;
  r.final_total = cfg.final_batch;
  r.final_ok = final_state->r.succeeded;
  auto s = pool.stats();
  r.respawns = s.respawns;
  r.worker_crashes = s.worker_crashes;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  co_return r;
}
#pragma GCC diagnostic pop

}  // namespace coproc::test::chaos
