// bench_emit: a streaming task's values (pool.stream, issue 18) against the
// pool's own no-op map on one worker, the target's yardstick (within 2x).
//
//   bench_emit emit [--quick]
//
// Rows: emit_tput (values/s, one task emitting 8-byte values; the reader
// drains with next() and try_next()); its yardstick, in the same run, the
// no-op map throughput per worker of a default pool (one worker per CPU):
// items/s over the worker count (emit_map_per_worker), and of a 1-worker
// pool (emit_map_one_worker); emit_latency_p50/p99 (us from out(v) in
// the worker to next() returning in the parent, values 200 us apart, the
// clock CLOCK_MONOTONIC on both sides), cold (the first value of a fresh
// pool's first stream) beside the warm distribution.
// Output: JSON lines (bench/run.py); run.py runs it pinned to CPU 0 and free.
#include <time.h>

#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string_view>
#include <thread>
#include <vector>

#include "coproc/coproc.hpp"
#include "json_lines.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

std::int64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

void count_to(coproc::emitter<std::int64_t>& out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    out(i);
  }
}

// Each value is the time it was emitted; a pause between values lets each
// one travel alone (the latency of one value, not of a batch).
void timestamps(coproc::emitter<std::int64_t>& out, int n, int pause_us) {
  for (int i = 0; i < n; ++i) {
    out(now_ns());
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
  }
}

int noop(int x) {
  return x;
}

double per_second(std::size_t n, clock_type::duration d) {
  return static_cast<double>(n) / std::chrono::duration<double>(d).count();
}

asio::awaitable<std::int64_t> drain(coproc::task_stream<std::int64_t>& s) {
  std::int64_t n = 0;
  while (auto v = co_await s.next()) {
    do {
      ++n;
    } while ((v = s.try_next()));
  }
  co_return n;
}

asio::awaitable<void> throughput(std::size_t values) {
  auto ex = co_await asio::this_coro::executor;
  coproc::process_pool pool(ex, {.workers = 1});
  auto warm = pool.stream(count_to, std::int64_t{1000});
  co_await drain(warm);
  auto t0 = clock_type::now();
  auto s = pool.stream(count_to, static_cast<std::int64_t>(values));
  std::int64_t got = co_await drain(s);
  auto took = clock_type::now() - t0;
  if (got != static_cast<std::int64_t>(values)) {
    throw std::runtime_error("a stream lost values");
  }
  bench::emit("emit_tput", "coproc pool.stream, one task, 8-byte values", per_second(values, took),
              "values/s", "higher");
  std::vector<int> in(values, 1);
  co_await pool.map(noop, in);  // warm
  t0 = clock_type::now();
  co_await pool.map(noop, in);
  bench::emit("emit_map_one_worker", "process_pool map, 1 worker, no-op items",
              per_second(values, clock_type::now() - t0), "items/s", "higher");
  coproc::process_pool full(ex);
  co_await full.map(noop, in);  // warm every worker
  t0 = clock_type::now();
  co_await full.map(noop, in);
  bench::emit("emit_map_per_worker", "process_pool map, default workers, no-op items per worker",
              per_second(values, clock_type::now() - t0) / static_cast<double>(full.size()),
              "items/s", "higher");
}

asio::awaitable<void> latency(int n) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<double> us;
  double cold = 0;
  {
    coproc::process_pool pool(ex, {.workers = 1});
    auto s = pool.stream(timestamps, 1, 0);
    auto v = co_await s.next();
    cold = static_cast<double>(now_ns() - *v) / 1e3;
    co_await drain(s);
    auto warm = pool.stream(timestamps, n, 200);
    while (auto t = co_await warm.next()) {
      us.push_back(static_cast<double>(now_ns() - *t) / 1e3);
    }
  }
  bench::emit("emit_latency_cold", "coproc pool.stream, first value of a fresh pool", cold, "us",
              "lower");
  bench::emit_latency("emit_latency", "coproc pool.stream, out(v) to next()", us);
}

asio::awaitable<void> measure(bool quick) {
  co_await throughput(quick ? 200'000 : 2'000'000);
  co_await latency(quick ? 300 : 3000);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) != "emit") {
    std::fprintf(stderr, "usage: bench_emit emit [--quick]\n");
    return 2;
  }
  const bool quick = argc > 2 && std::string_view(argv[2]) == "--quick";
  asio::io_context ctx;
  std::exception_ptr error;
  asio::co_spawn(ctx, measure(quick), [&](std::exception_ptr e) { error = e; });
  ctx.run();
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_emit: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}
