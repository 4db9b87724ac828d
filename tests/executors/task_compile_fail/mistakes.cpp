// Compiled by ctest (tests/CMakeLists.txt, tests/executors/task_compile_fail/count_errors.cmake)
// once per COPROC_CASE: each mistake must fail to compile with exactly one error, coproc's
// own message; the accepted cases (0 and 1) must compile without any.
#include <coproc/coproc.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace {

int twice(int x) {
  return 2 * x;
}
void fill(int& out) {
  out = 1;
}
void nothing(int) {}

struct widget {
  int base = 0;
  int add(int x) const { return base + x; }
};

struct scale {  // a function object whose members are values, declared
  double factor = 1;
  double operator()(double x) const { return x * factor; }
};

struct offset {  // a function object with members, not declared
  int by = 0;
  int operator()(int x) const { return x + by; }
};

struct no_default {
  explicit no_default(int v) : value(v) {}
  int value;
};
no_default make_no_default(int v) {
  return no_default(v);
}

void child(coproc::queue<int>& q, int n) {
  q.put(n);
}

}  // namespace

template <>
inline constexpr bool coproc::enable_task_object<scale> = true;

asio::awaitable<void> use(coproc::process_pool& pool, asio::io_context& ctx) {
  [[maybe_unused]] std::vector<int> v{1, 2, 3};
  [[maybe_unused]] int k = 3;
  [[maybe_unused]] int* p = &k;
#if COPROC_CASE == 0  // accepted: every form of callable the rule admits
  int a = co_await pool.submit(twice, 1);
  int b = co_await pool.submit([](int x) { return x + 1; }, 1);
  int c = co_await pool.submit(&widget::add, widget{2}, 1);
  int d = co_await pool.submit(&widget::base, widget{2});
  double e = co_await pool.submit(scale{2.0}, 1.5);
  std::vector<widget> ws{{1}, {2}};
  std::vector<int> m = co_await pool.map(&widget::base, ws);
  std::vector<double> ds{1.0};
  std::vector<double> n = co_await pool.map(scale{3.0}, ds);
  (void)a, (void)b, (void)c, (void)d, (void)e, (void)m, (void)n;
#elif COPROC_CASE == 1   // accepted: a process handed a queue by reference
  coproc::queue<int> q;
  coproc::process proc(ctx.get_executor(), child, q, 1);
  coproc::process proc2(
      ctx.get_executor(), [](coproc::queue<int>& qq) { qq.put(2); }, q);
#elif COPROC_CASE == 2   // reference capture
  (void)co_await pool.submit([&v](int i) { return v[static_cast<std::size_t>(i)]; }, 1);
#elif COPROC_CASE == 3   // pointer capture
  (void)co_await pool.submit([p] { return *p; });
#elif COPROC_CASE == 4   // std::function
  std::function<int(int)> f = twice;
  (void)co_await pool.submit(f, 1);
#elif COPROC_CASE == 5   // mutable lambda
  (void)co_await pool.submit([k](int x) mutable { return k += x; }, 1);
#elif COPROC_CASE == 6   // out-parameter
  co_await pool.submit(fill, 0);
#elif COPROC_CASE == 7   // map with a void function
  co_await pool.map(nothing, v);
#elif COPROC_CASE == 8   // non-codable argument: the specific reason
  (void)co_await pool.submit([](std::string_view s) { return s.size(); }, std::string_view("x"));
#elif COPROC_CASE == 9   // result not default-constructible
  (void)co_await pool.submit(make_no_default, 1);
#elif COPROC_CASE == 10  // a function object with members, not declared
  (void)co_await pool.submit(offset{1}, 1);
#elif COPROC_CASE == 11  // a process with a capturing lambda
  coproc::queue<int> q;
  coproc::process proc(ctx.get_executor(), [&q] { q.put(1); });
#elif COPROC_CASE == 12  // a member function with a pointer to the object
  widget w;
  (void)co_await pool.submit(&widget::add, &w, 1);
#elif COPROC_CASE == 13  // by-value capture
  (void)co_await pool.submit([k](int x) { return k * x; }, 1);
#elif COPROC_CASE == 14  // a queue moved into a process
  coproc::queue<int> q;
  coproc::process proc(ctx.get_executor(), child, std::move(q), 1);
#elif COPROC_CASE == 15  // map_unordered with a capture
  auto s = pool.map_unordered([k](int x) { return x + k; }, v);
  (void)s;
#endif
  (void)ctx;
  co_return;
}
