#pragma once
// Leak cycles shared by leak_test.cpp (short counts) and chaos_run.cpp (the
// full 10,000): worker respawns, and create-destroy cycles of pipes
// (coproc::connection pairs), queues and shared-memory segments. Each
// measures the process's footprint (fds, children, zombies, /proc/self/maps
// lines, VmSize) after a warm-up and again after the cycles.

#include <asio.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>

#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/pipe.hpp"
#include "coproc/ipc/queue.hpp"
#include "coproc/ipc/shared_memory.hpp"
#include "reliability_support.hpp"

namespace coproc::test::leaks {

struct leak_report {
  std::string name;
  std::size_t cycles = 0;
  footprint before;
  footprint after;
  std::uint64_t respawns = 0;  ///< respawn cycles only
  std::string error;           ///< an unexpected failure inside the cycles

  bool ok() const {
    return error.empty() && after.fds == before.fds && after.children == before.children &&
           after.children.zombies == 0 && after.descendants == before.descendants &&
           after.descendants.zombies == 0 &&
           (after.maps == before.maps || !maps_lines_comparable) &&
           after.vm_size_kb == before.vm_size_kb;
  }
};

inline bool report(const leak_report& r, std::FILE* out) {
  std::fprintf(out,
               "leaks: %s x %zu%s: fds %zu -> %zu, children %d -> %d, descendants %d -> %d, "
               "zombies %d -> %d, "
               "maps lines %zu -> %zu, VmSize %zu kB -> %zu kB: %s%s%s\n",
               r.name.c_str(), r.cycles,
               r.respawns != 0 ? (" (" + std::to_string(r.respawns) + " respawns)").c_str() : "",
               r.before.fds, r.after.fds, r.before.children.children, r.after.children.children,
               r.before.descendants.children, r.after.descendants.children,
               r.before.descendants.zombies, r.after.descendants.zombies, r.before.maps,
               r.after.maps, r.before.vm_size_kb, r.after.vm_size_kb, r.ok() ? "ok" : "LEAK",
               r.error.empty() ? "" : "; error: ", r.error.c_str());
  if (r.after.fds != r.before.fds) {
    std::set<std::string> before(r.before.fds_named.begin(), r.before.fds_named.end());
    std::set<std::string> after(r.after.fds_named.begin(), r.after.fds_named.end());
    for (const auto& f : before) {
      if (!after.count(f)) {
        std::fprintf(out, "leaks:   fd gone: %s\n", f.c_str());
      }
    }
    for (const auto& f : after) {
      if (!before.count(f)) {
        std::fprintf(out, "leaks:   fd new: %s\n", f.c_str());
      }
    }
  }
  return r.ok();
}

inline std::int64_t recycled(std::int64_t x) {
  return x + 1;
}
inline std::int64_t dies(std::int64_t x) {
  if (x % 2 == 0) {
    ::_exit(5);
  }
  ::raise(SIGKILL);
  return 0;
}

/// `n` worker respawns: a pool with max_tasks_per_worker = 1 runs `n` tasks,
/// a third of which crash their worker (the rest retire it after the task).
/// Every task replaces its worker once.
inline leak_report respawn_cycles(std::size_t n, std::size_t workers = 2) {
  leak_report r;
  r.name = "worker respawns";
  r.cycles = n;
  asio::io_context ctx;
  process_pool pool(ctx.get_executor(), {.workers = workers, .max_tasks_per_worker = 1});
  auto run = [&](std::size_t count, std::size_t first) -> asio::awaitable<void> {
    for (std::size_t i = first; i < first + count; ++i) {
      auto x = static_cast<std::int64_t>(i);
      try {
        if (i % 3 == 0) {
          co_await pool.submit(dies, x);
          r.error = "a crashing task returned a value";
        } else {
          std::int64_t v = co_await pool.submit(recycled, x);
          if (v != x + 1 && r.error.empty()) {
            r.error = "wrong value";
          }
        }
      } catch (const std::system_error& e) {
        if (!(i % 3 == 0 && e.code() == coproc::errc::worker_crashed) && r.error.empty()) {
          r.error = e.what();
        }
      }
    }
    // Respawns are asynchronous: wait until the pool is whole again. Under
    // ASan on a loaded 2-core machine the last replacement can take seconds;
    // a pool that never becomes whole is reported, not measured as a leak.
    asio::steady_timer t(ctx);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    // Whole: every worker alive and running (not a retired one whose exit the
    // pool has not seen yet), the zygote and the workers the only descendants.
    auto whole = [&] {
      auto s = pool.stats();
      // Every task retires or kills its worker: one respawn each, so fewer
      // respawns than tasks means a replacement is still on its way.
      if (s.respawns < first + count || s.workers_alive != workers ||
          s.worker_pids.size() != workers) {
        return false;
      }
      for (pid_t p : s.worker_pids) {
        if (!alive(p)) {
          return false;
        }
      }
      auto d = count_descendants();
      return d.children == static_cast<int>(workers) + 1 && d.zombies == 0;
    };
    while (!whole()) {
      if (std::chrono::steady_clock::now() >= until) {
        if (r.error.empty()) {
          auto s = pool.stats();
          r.error = "the pool was not whole again 60 s after the cycles (respawns " +
                    std::to_string(s.respawns) + " of " + std::to_string(first + count) +
                    ", workers alive " + std::to_string(s.workers_alive) + ", descendants " +
                    std::to_string(count_descendants().children) + ")";
        }
        break;
      }
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(asio::use_awaitable);
    }
  };
  auto go = [&](std::size_t count, std::size_t first) {
    asio::co_spawn(ctx, run(count, first), asio::detached);
    ctx.restart();
    ctx.run();
  };
  go(30, 0);  // warm-up: allocator pools, lazily mapped pages
  r.before = measure();
  std::uint64_t respawns_before = 0;
  {
    auto s = pool.stats();
    respawns_before = s.respawns;
  }
  go(n, 30);
  r.after = measure();
  r.respawns = pool.stats().respawns - respawns_before;
  if (r.respawns < n && r.error.empty()) {
    r.error = "only " + std::to_string(r.respawns) + " respawns";
  }
  return r;
}

/// `n` cycles of: a connection pair carrying one message each way, a
/// queue<int> carrying one item, a 64 KiB shared_memory segment written once.
inline leak_report resource_cycles(std::size_t n) {
  leak_report r;
  r.name = "pipe + queue + segment create-destroy";
  r.cycles = n;
  asio::io_context ctx;
  auto one = [&](std::size_t i) {
    {
      auto [a, b] = coproc::make_connection_pair(ctx.get_executor());
      a.send(static_cast<int>(i));
      int got = b.receive<int>();
      b.send(std::string("back"));
      std::string back = a.receive<std::string>();
      if ((got != static_cast<int>(i) || back != "back") && r.error.empty()) {
        r.error = "connection message mismatch";
      }
    }
    {
      coproc::queue<int> q({.max_items = 16, .max_bytes = 4096});
      q.put(static_cast<int>(i));
      auto got = q.try_get();
      if ((!got || *got != static_cast<int>(i)) && r.error.empty()) {
        r.error = "queue item mismatch";
      }
    }
    {
      coproc::shared_memory seg(64 * 1024);
      seg.data()[seg.size() - 1] = std::byte{1};
    }
  };
  try {
    for (std::size_t i = 0; i < 20; ++i) {
      one(i);
    }
    r.before = measure();
    for (std::size_t i = 0; i < n; ++i) {
      one(i);
    }
    r.after = measure();
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

}  // namespace coproc::test::leaks
