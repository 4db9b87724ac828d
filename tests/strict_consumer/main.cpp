// Built by ctest `strict_headers` (tests/strict_consumer/CMakeLists.txt) through
// add_subdirectory, so coproc's headers come in with -I (not -isystem), under
// -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror: every public
// header is included and its main templates are instantiated, so a warning in any of them
// fails the build. Then it runs a few tasks.
#include <coproc/coproc.hpp>
#include <coproc/executors/task_object.hpp>

#include <cereal/types/string.hpp>
#include <cstdio>
#include <string>
#include <vector>

namespace {

int square(int x) {
  return x * x;
}
struct point {
  int x = 0;
  int y = 0;
  int sum() const { return x + y; }
};
struct scale {
  double factor = 1;
  double operator()(double v) const { return v * factor; }
};
void produce(coproc::queue<int>& q, int n) {
  for (int i = 0; i < n; ++i) {
    q.put(i);
  }
}

}  // namespace

template <>
inline constexpr bool coproc::enable_task_object<scale> = true;

asio::awaitable<int> run(coproc::process_pool& pool, asio::io_context& ctx) {
  int failures = 0;
  int a = co_await pool.submit(square, 7);
  failures += a == 49 ? 0 : 1;
  int b = co_await pool.submit(&point::sum, point{1, 2});
  failures += b == 3 ? 0 : 1;
  double c = co_await pool.submit(scale{2.0}, 1.5);
  failures += c == 3.0 ? 0 : 1;
  std::vector<int> in{1, 2, 3};
  std::vector<int> out = co_await pool.map(square, in);
  failures += out.size() == 3 && out[2] == 9 ? 0 : 1;
  auto stream = pool.map_unordered(square, in);
  int sum = 0;
  while (auto r = co_await stream.next()) {
    sum += r->get();
  }
  failures += sum == 14 ? 0 : 1;
  std::string s = co_await pool.submit_for(
      std::chrono::seconds(10), [](std::string t) { return t + "!"; }, "hi");
  failures += s == "hi!" ? 0 : 1;

  coproc::queue<int> q;
  coproc::process p(ctx.get_executor(), produce, q, 3);
  p.start();
  auto st = co_await p.async_join(asio::use_awaitable);
  failures += st.success() ? 0 : 1;
  int got = co_await q.async_get(asio::use_awaitable);
  failures += got == 0 ? 0 : 1;
  co_return failures;
}

int main() {
  // The sync primitives and shared values: constructed, so their templates instantiate.
  coproc::lock l;
  coproc::recursive_lock rl;
  coproc::semaphore sem(1);
  coproc::event ev;
  coproc::condition cv;
  coproc::barrier bar(1);
  coproc::shared_value<long> v(0);
  v.update([](long& x) { ++x; });
  coproc::shared_array<double> arr(4);
  arr.store(1, 2.5);
  coproc::joinable_queue<std::string> jq;
  jq.put("x");
  (void)jq.get();
  jq.task_done();
  std::vector<std::byte> bytes = coproc::encode_to_vector(std::string("x"), 3, 2.5);
  (void)bytes;

  asio::io_context ctx;
  coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
  int failures = -1;
  asio::co_spawn(ctx, run(pool, ctx), [&](std::exception_ptr e, int f) { failures = e ? 100 : f; });
  ctx.run();
  std::printf("strict consumer: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
