// The README's example (kept identical there; a ctest entry checks it).
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <coproc/coproc.hpp>
#include <csignal>
#include <cstdio>
#include <string_view>

int fib(int n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}
int crash(int sig) {
  return std::raise(sig);
}
int spin() {
  for (;;) {
    asm volatile("");
  }
}

// Two more README excerpts, compiled with the tour (the error-code form, and
// worker output routed to a callback).
asio::awaitable<void> try_fib(coproc::process_pool& pool) {
  std::exception_ptr task_error;
  auto [ec, v] = co_await coproc::async_submit_ec(
      pool, task_error, fib, 30, asio::experimental::as_tuple(asio::use_awaitable));
  if (ec == coproc::errc::task_raised) {
    std::rethrow_exception(task_error);  // fib's own exception
  } else if (ec) {
    std::printf("no result: %s\n", ec.message().c_str());  // crashed, timed out, ...
  } else {
    std::printf("fib(30) = %d\n", v);
  }
}

void logged(asio::io_context& ctx) {
  coproc::process_pool pool(ctx,
                            {.workers = 2,
                             .worker_output = coproc::worker_output::callback,
                             .on_worker_output = [](int pid, int stream, std::string_view line) {
                               std::fprintf(stream == 2 ? stderr : stdout, "worker %d: %.*s\n", pid,
                                            static_cast<int>(line.size()), line.data());
                             }});
}

asio::awaitable<void> work(coproc::process_pool& pool) {
  int a = co_await pool.submit(fib, 30);            // one task
  std::vector<int> in{20, 25, 30};                  // (g++ 12: no braced list inside co_await)
  std::vector<int> v = co_await pool.map(fib, in);  // ordered
  std::printf("fib(30) = %d, map: %d %d %d\n", a, v[0], v[1], v[2]);
  try {
    co_await pool.submit(crash, SIGSEGV);
  } catch (const std::system_error& e) {  // e.code() == coproc::errc::worker_crashed
    std::printf("caught: %s\n", e.what());
  }
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
  auto r = co_await (pool.submit(spin) || t.async_wait(asio::use_awaitable));
  std::printf("winner: %zu (1: the timer; the spinning worker was killed)\n", r.index());
}

int main() {
  asio::io_context ctx;
  coproc::process_pool pool(ctx.get_executor(), {.workers = 2});  // early, before any thread
  asio::co_spawn(ctx, work(pool), asio::detached);
  ctx.run();
}
