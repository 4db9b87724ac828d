// Start methods compared: time to a ready pool and a submit round trip, for
// start_method::fork_server and start_method::spawn.
//
//   bench_spawn_start [repetitions=15] [round_trips=2000] [workers=2] [host_mib=0]
//
// host_mib: memory this process touches first, standing for a large host (a
// fork copies its page tables; posix_spawn does not).
//
// Per repetition: a fresh pool; "construct" is the constructor alone, "ready"
// is the constructor plus the first result of an empty task (a worker forked
// from the zygote and answering), "rtt" the median of sequential round trips
// of add(1, 2) on that pool. Prints JSON lines (bench/json_lines.hpp): the
// median over repetitions of each figure.

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "coproc/executors/process_pool.hpp"
#include "json_lines.hpp"

namespace {

int add(int a, int b) {
  return a + b;
}
void nothing() {}

using clock_type = std::chrono::steady_clock;

double us_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct sample {
  double construct_us = 0;
  double ready_us = 0;
  double rtt_us = 0;
};

asio::awaitable<void> one(asio::io_context& ctx, coproc::start_method method, std::size_t workers,
                          int round_trips, sample& out) {
  coproc::pool_options o;
  o.workers = workers;
  o.start_method = method;
  auto t0 = clock_type::now();
  coproc::process_pool pool(ctx.get_executor(), std::move(o));
  out.construct_us = us_since(t0);
  co_await pool.submit(nothing);
  out.ready_us = us_since(t0);
  for (int i = 0; i < 100; ++i) {  // warm-up
    co_await pool.submit(add, 1, 2);
  }
  std::vector<double> rtt;
  rtt.reserve(static_cast<std::size_t>(round_trips));
  for (int i = 0; i < round_trips; ++i) {
    auto t = clock_type::now();
    int v = co_await pool.submit(add, 1, 2);
    rtt.push_back(us_since(t));
    if (v != 3) {
      std::abort();
    }
  }
  out.rtt_us = median(std::move(rtt));
}

}  // namespace

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 15;
  int round_trips = argc > 2 ? std::atoi(argv[2]) : 2000;
  std::size_t workers = argc > 3 ? static_cast<std::size_t>(std::atoi(argv[3])) : 2;
  std::size_t host_mib = argc > 4 ? static_cast<std::size_t>(std::atoi(argv[4])) : 0;
  std::vector<char> host(host_mib << 20, 1);
  const std::pair<coproc::start_method, const char*> methods[] = {
      {coproc::start_method::fork_server, "fork_server"}, {coproc::start_method::spawn, "spawn"}};
  std::vector<sample> samples[2];
  // Interleaved, so that a change in the machine's load hits both methods.
  for (int r = 0; r < reps; ++r) {
    for (int m = 0; m < 2; ++m) {
      asio::io_context ctx;
      sample s;
      asio::co_spawn(ctx, one(ctx, methods[m].first, workers, round_trips, s), asio::detached);
      ctx.run();
      samples[m].push_back(s);
    }
  }
  std::string extra = ", \"workers\": " + std::to_string(workers) +
                      ", \"repetitions\": " + std::to_string(reps) +
                      ", \"host_mib\": " + std::to_string(host.size() >> 20);
  for (int m = 0; m < 2; ++m) {
    std::vector<double> c, rd, rt;
    for (const sample& s : samples[m]) {
      c.push_back(s.construct_us);
      rd.push_back(s.ready_us);
      rt.push_back(s.rtt_us);
    }
    bench::emit("pool_construct", methods[m].second, median(c), "us", "lower", extra);
    bench::emit("pool_ready", methods[m].second, median(rd), "us", "lower", extra);
    bench::emit("submit_rtt", methods[m].second, median(rt), "us", "lower", extra);
  }
}
