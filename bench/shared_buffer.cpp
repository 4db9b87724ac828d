// bench_shared_buffer: a task that reads or writes a 64 MiB shared_buffer
// against the same work in-process (issue 15: zero-copy payloads).
//
//   bench_shared_buffer shbuf [--quick]
//
// Rows (ms, lower is better), each with the cold first call beside the warm
// median and the spread of the warm repeats:
//   shbuf_sum_64MiB   coproc: submit(sum, buffer) on a default pool;
//                     limit: the same sum in this process.
//   shbuf_fill_64MiB  coproc: submit(fill_new, n) creating, filling and
//                     returning a new buffer; limit: the same in this process.
//   shbuf_map_item_bytes  bytes one map item (buffer, first, last) encodes to,
//                     against the 64 MiB the buffer holds.
// Output: one JSON object per line, the protocol described in bench/run.py.
#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <numeric>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "coproc/executors/process_pool.hpp"
#include "coproc/ipc/shared_buffer.hpp"
#include "json_lines.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr std::size_t elements = (std::size_t{64} << 20) / sizeof(double);

double sum(coproc::shared_buffer<const double> b) {
  return std::accumulate(b.begin(), b.end(), 0.0);
}

coproc::shared_buffer<double> fill_new(std::size_t n) {
  coproc::shared_buffer<double> b(n);
  for (std::size_t i = 0; i < n; ++i) {
    b[i] = static_cast<double>(i) * 0.5;
  }
  return b;
}

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

/// The cold first sample and the warm median with its spread ((max-min)/median).
void report(std::string_view metric, std::string_view contender, std::string_view kind,
            const std::vector<double>& samples) {
  std::vector<double> warm(samples.begin() + 1, samples.end());
  std::sort(warm.begin(), warm.end());
  const double median = bench::percentile(warm, 0.5);
  const double spread = (warm.back() - warm.front()) / median;
  bench::emit(metric, contender, median, "ms", "lower",
              ", \"kind\": \"" + std::string(kind) +
                  "\", \"cold_ms\": " + bench::fmt_double(samples.front()) + ", \"warm_spread\": " +
                  bench::fmt_double(spread) + ", \"warm_n\": " + std::to_string(warm.size()));
  bench::emit(std::string(metric) + "_cold", contender, samples.front(), "ms", "lower",
              ", \"kind\": \"" + std::string(kind) + "\"");
}

template <class F>
asio::awaitable<std::vector<double>> sample(int reps, F f) {
  std::vector<double> out;
  for (int i = 0; i < reps; ++i) {
    auto t0 = clock_type::now();
    co_await f();
    out.push_back(ms_since(t0));
  }
  co_return out;
}

asio::awaitable<void> measure(int reps) {
  auto ex = co_await asio::this_coro::executor;
  coproc::process_pool pool(ex, {});  // the default scheduler and worker count
  co_await pool.submit(sum, coproc::shared_buffer<const double>(1));  // workers up
  coproc::shared_buffer<double> data(elements);
  std::iota(data.begin(), data.end(), 0.0);
  const coproc::shared_buffer<const double> view = data;
  double sink = 0;

  // In-process yardsticks first: the data is resident either way.
  auto local_sum = co_await sample(reps, [&]() -> asio::awaitable<void> {
    sink += sum(view);
    co_return;
  });
  auto task_sum = co_await sample(
      reps, [&]() -> asio::awaitable<void> { sink += co_await pool.submit(sum, view); });
  auto local_fill = co_await sample(reps, [&]() -> asio::awaitable<void> {
    sink += fill_new(elements)[1];
    co_return;
  });
  auto task_fill = co_await sample(reps, [&]() -> asio::awaitable<void> {
    coproc::shared_buffer<double> b = co_await pool.submit(fill_new, elements);
    sink += b.size() == elements ? 0.0 : 1.0;
  });
  report("shbuf_sum_64MiB", "coproc submit(sum, shared_buffer)", "coproc", task_sum);
  report("shbuf_sum_64MiB", "sum in-process", "limit", local_sum);
  report("shbuf_fill_64MiB", "coproc submit(fill_new) -> shared_buffer", "coproc", task_fill);
  report("shbuf_fill_64MiB", "fill a new shared_buffer in-process", "limit", local_fill);

  std::tuple<coproc::shared_buffer<const double>, std::size_t, std::size_t> item{view, 0, elements};
  bench::emit("shbuf_map_item_bytes", "coproc map item (buffer, first, last)",
              static_cast<double>(coproc::encoded_size(item)), "B", "lower",
              ", \"buffer_bytes\": " + std::to_string(data.size_bytes()));
  if (sink < 0) {
    std::printf("#\n");  // keeps the sums observable
  }
  co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) != "shbuf") {
    std::fprintf(stderr, "usage: bench_shared_buffer shbuf [--quick]\n");
    return 2;
  }
  const bool quick = argc > 2 && std::string_view(argv[2]) == "--quick";
  asio::io_context ctx;
  std::exception_ptr error;
  asio::co_spawn(ctx, measure(quick ? 3 : 11), [&](std::exception_ptr e) { error = e; });
  ctx.run();
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_shared_buffer: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}
