// `./x chaos`: the full reliability run, a standalone program (not a ctest
// entry). It runs the chaos schedule (default 100,000 tasks, a fault every
// 100: half outside kills, half crashing tasks) and then the full leak
// cycles (10,000 worker respawns; 10,000 create-destroy cycles of pipes,
// queues and shared-memory segments), printing every count. Exit status 0
// only when every check holds.
//
//   chaos_run [--tasks N] [--fault-every N] [--workers N] [--seed N]
//             [--respawns N] [--cycles N] [--skip-leaks]

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
  cfg.deadline = std::chrono::seconds(600);
  std::size_t workers = arg_value(argc, argv, "--workers", 2);
  std::size_t respawns = arg_value(argc, argv, "--respawns", 10000);
  std::size_t cycles = arg_value(argc, argv, "--cycles", 10000);
  bool ok = true;

  std::printf("chaos: %zu tasks, %zu workers, a fault every %zu tasks, seed %llu\n", cfg.tasks,
              workers, cfg.fault_every, static_cast<unsigned long long>(cfg.seed));
  auto before = coproc::test::count_children();
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
  bool reaped = coproc::test::count_children() == before;
  std::printf("chaos: children after the pool was destroyed: %s\n",
              reaped ? "none left" : "LEFT BEHIND");
  ok = ok && r.ok() && reaped && r.submitted == cfg.tasks;

  if (!has_flag(argc, argv, "--skip-leaks")) {
    ok = coproc::test::leaks::report(coproc::test::leaks::respawn_cycles(respawns, workers),
                                     stdout) &&
         ok;
    ok = coproc::test::leaks::report(coproc::test::leaks::resource_cycles(cycles), stdout) && ok;
  }
  std::printf("chaos: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
