// `./x chaos`: the full reliability run, a standalone program (not a ctest
// entry). It runs the chaos schedule (default 100,000 tasks, a fault every
// 100: half outside kills, half crashing tasks; a hostile task every 25:
// scribbled rings, closed fds, kill(0, SIGTERM), lingering grandchildren,
// cleared death signals) and then the full leak cycles (10,000 worker
// respawns; 10,000 create-destroy cycles of pipes, queues and shared-memory
// segments), printing every count. The program is a child subreaper, so a
// grandchild that outlived the pool is re-parented to it and counted as a
// survivor. Exit status 0 only when every check holds.
//
//   chaos_run [--tasks N] [--fault-every N] [--hostile-every N] [--workers N]
//             [--seed N] [--respawns N] [--cycles N] [--skip-leaks]

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "chaos.hpp"
#include "leak_cycles.hpp"
#include "reliability_support.hpp"

namespace {

std::size_t arg_value(int argc, char** argv, const char* name, std::size_t fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) {
      return static_cast<std::size_t>(std::strtoull(argv[i + 1], nullptr, 10));
    }
  }
  return fallback;
}

bool has_flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  namespace chaos = coproc::test::chaos;
  chaos::config cfg;
  cfg.tasks = arg_value(argc, argv, "--tasks", 100000);
  cfg.fault_every = arg_value(argc, argv, "--fault-every", 100);
  cfg.seed = arg_value(argc, argv, "--seed", 1);
  cfg.hostile_every = arg_value(argc, argv, "--hostile-every", 25);
  cfg.deadline = std::chrono::seconds(600);
  std::size_t workers = arg_value(argc, argv, "--workers", 2);
  std::size_t respawns = arg_value(argc, argv, "--respawns", 10000);
  std::size_t cycles = arg_value(argc, argv, "--cycles", 10000);
  bool ok = true;

  std::printf(
      "chaos: %zu tasks, %zu workers, a fault every %zu tasks, a hostile task every %zu, seed "
      "%llu\n",
      cfg.tasks, workers, cfg.fault_every, cfg.hostile_every,
      static_cast<unsigned long long>(cfg.seed));
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  auto before = coproc::test::count_children();
  auto footprint_before = coproc::test::measure();
  chaos::result r;
  {
    asio::io_context ctx;
    coproc::process_pool pool(ctx.get_executor(), {.workers = workers});
    asio::co_spawn(
        ctx, [&]() -> asio::awaitable<void> { r = co_await chaos::run(pool, cfg); },
        [](std::exception_ptr e) {
          if (e) {
            std::fprintf(stderr, "chaos: %s\n", chaos::detail::describe(e).c_str());
          }
        });
    ctx.run();
  }
  r.print(stdout);
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {  // orphans re-parented here that died
  }
  bool reaped = coproc::test::count_children() == before;
  std::printf("chaos: children after the pool was destroyed: %s\n",
              reaped ? "none left" : "LEFT BEHIND");
  auto survivors = coproc::test::live_descendants(::getpid());
  auto footprint_after = coproc::test::measure();
  bool baseline =
      footprint_after.fds == footprint_before.fds &&
      footprint_after.descendants == footprint_before.descendants &&
      (!coproc::test::maps_lines_comparable || footprint_after.maps == footprint_before.maps);
  std::printf(
      "chaos: survivors (descendants left after the pool): %zu; fds %zu -> %zu, "
      "descendants %d -> %d, maps %zu -> %zu: %s\n",
      survivors.size(), footprint_before.fds, footprint_after.fds,
      footprint_before.descendants.children, footprint_after.descendants.children,
      footprint_before.maps, footprint_after.maps, baseline ? "at baseline" : "CHANGED");
  for (pid_t p : survivors) {
    ::kill(p, SIGKILL);
  }
  ok = ok && r.ok() && reaped && survivors.empty() && baseline && r.submitted == cfg.tasks;

  if (!has_flag(argc, argv, "--skip-leaks")) {
    ok = coproc::test::leaks::report(coproc::test::leaks::respawn_cycles(respawns, workers),
                                     stdout) &&
         ok;
    ok = coproc::test::leaks::report(coproc::test::leaks::resource_cycles(cycles), stdout) && ok;
  }
  std::printf("chaos: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
