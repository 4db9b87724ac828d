// bench_stream: map_unordered's result stream against map, on 1e6 no-op
// items (issue: the API a C++ user expects, item 11).
//
//   bench_stream stream [--quick]
//
// Rows (metric unordered_tput, items/s): map with automatic chunks, and
// map_unordered consumed three ways: next_chunk(), next() alone (one
// co_await per item), next() then try_next() for what is buffered.
// Output: one JSON object per line, the protocol described in bench/run.py.
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string_view>
#include <vector>

#include "coproc/executors/process_pool.hpp"
#include "json_lines.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

int noop(int x) {
  return x;
}

asio::awaitable<std::size_t> by_chunk(coproc::result_stream<int>& s) {
  std::size_t n = 0;
  while (auto c = co_await s.next_chunk()) {
    n += c->values.size();
  }
  co_return n;
}

asio::awaitable<std::size_t> by_next(coproc::result_stream<int>& s) {
  std::size_t n = 0;
  while (auto r = co_await s.next()) {
    n += static_cast<std::size_t>(r->get());
  }
  co_return n;
}

asio::awaitable<std::size_t> by_next_and_try_next(coproc::result_stream<int>& s) {
  std::size_t n = 0;
  while (auto r = co_await s.next()) {
    do {
      n += static_cast<std::size_t>(r->get());
    } while ((r = s.try_next()));
  }
  co_return n;
}

void report(const char* contender, std::size_t items, clock_type::duration d) {
  bench::emit("unordered_tput", contender,
              static_cast<double>(items) / std::chrono::duration<double>(d).count(), "items/s",
              "higher");
}

asio::awaitable<void> measure(std::size_t items) {
  auto ex = co_await asio::this_coro::executor;
  coproc::process_pool pool(ex, {.workers = 2});
  std::vector<int> in(items, 1);
  co_await pool.map(noop, in);  // warm every worker
  auto t0 = clock_type::now();
  co_await pool.map(noop, in);
  report("coproc map (auto chunks)", items, clock_type::now() - t0);
  using way = asio::awaitable<std::size_t> (*)(coproc::result_stream<int>&);
  const std::pair<const char*, way> ways[] = {
      {"coproc map_unordered, next_chunk()", &by_chunk},
      {"coproc map_unordered, next()", &by_next},
      {"coproc map_unordered, next() + try_next()", &by_next_and_try_next},
  };
  for (const auto& [name, fn] : ways) {
    t0 = clock_type::now();
    auto stream = pool.map_unordered(noop, in);
    std::size_t n = co_await fn(stream);
    if (n != items) {
      throw std::runtime_error("map_unordered lost items");
    }
    report(name, items, clock_type::now() - t0);
  }
  co_await pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) != "stream") {
    std::fprintf(stderr, "usage: bench_stream stream [--quick]\n");
    return 2;
  }
  const bool quick = argc > 2 && std::string_view(argv[2]) == "--quick";
  asio::io_context ctx;
  std::exception_ptr error;
  asio::co_spawn(ctx, measure(quick ? 100'000 : 1'000'000),
                 [&](std::exception_ptr e) { error = e; });
  ctx.run();
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_stream: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}
