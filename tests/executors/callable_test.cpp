// The callables a task may carry (issue 14, items 1 and 2): member function and data
// pointers with the object first (std::invoke forms), declared task objects, and shared
// objects (queue, connection, manager proxy) handed to a coproc::process child as
// arguments instead of through a capture. The refusals are compile-time:
// tests/executors/task_compile_fail.
#include <cereal/types/string.hpp>

#include <asio.hpp>
#include <catch2/catch_test_macros.hpp>
#include <string>
#include <vector>

#include "async_test.hpp"
#include "coproc/coproc.hpp"

namespace {

struct widget {
  int base = 0;
  int add(int x) const { return base + x; }
  int bump(int x) { return base += x; }  // non-const: runs on the worker's copy
};

struct shape {
  virtual ~shape() = default;
  virtual int sides() const { return 0; }
};
struct square : shape {
  int sides() const override { return 4; }
};

struct scale {  // values only, declared through enable_task_object
  double factor = 1;
  double operator()(double x) const { return x * factor; }
};

struct prefix {  // declared through its cereal serialization
  std::string text;
  std::string operator()(const std::string& s) const { return text + s; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(text);
  }
};

void produce(coproc::queue<int>& q, int first, int count) {
  for (int i = 0; i < count; ++i) {
    q.put(first + i);
  }
}

void echo_twice(coproc::connection& c) {
  int v = c.receive<int>();
  c.send(2 * v);
}

void record(coproc::dict_proxy<std::string, int>& d, std::string key, int value) {
  d.set(std::move(key), value);
}

}  // namespace

template <>
inline constexpr bool coproc::enable_task_object<scale> = true;

TEST_CASE("member function and data pointers take the object as first argument",
          "[callable][process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    CHECK(co_await pool.submit(&widget::add, widget{40}, 2) == 42);
    CHECK(co_await pool.submit(&widget::bump, widget{1}, 2) == 3);
    CHECK(co_await pool.submit(&widget::base, widget{7}) == 7);
    std::vector<widget> ws{{1}, {2}, {3}};
    std::vector<int> bases = co_await pool.map(&widget::base, ws);
    const std::vector<int> expected{1, 2, 3};
    CHECK(bases == expected);
    std::vector<int> one_per_chunk = co_await pool.map(&widget::base, ws, 1);
    CHECK(one_per_chunk == bases);
  });
}

TEST_CASE("a virtual member function pointer survives the wire", "[callable]") {
  using coproc::detail::from_wire;
  using coproc::detail::to_wire;
  auto pmf = &shape::sides;
  auto back = from_wire<decltype(pmf)>(to_wire(pmf));
  CHECK(back == pmf);
  square sq;
  CHECK((sq.*back)() == 4);
  auto plain = &widget::add;
  CHECK(from_wire<decltype(plain)>(to_wire(plain)) == plain);
  CHECK(to_wire(plain).is_address == 1);
  CHECK(to_wire(pmf).is_address == 0);
}

TEST_CASE("declared function objects carry their values to the worker",
          "[callable][process_pool]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process_pool pool(ctx.get_executor(), {.workers = 1});
    CHECK(co_await pool.submit(scale{2.5}, 4.0) == 10.0);
    prefix hello{"hello "};
    std::string greeted = co_await pool.submit(hello, std::string("world"));
    CHECK(greeted == "hello world");
    std::vector<double> xs{1.0, 2.0};
    // (Expected vectors as locals: g++ 12 miscompiles a braced list in a co_await expression.)
    const std::vector<double> tripled{3.0, 6.0};
    CHECK(co_await pool.map(scale{3.0}, xs) == tripled);
    std::vector<std::string> names{"a", "b"};
    const std::vector<std::string> marked{">a", ">b"};
    prefix arrow{">"};
    std::vector<std::string> arrowed = co_await pool.map(arrow, names);
    CHECK(arrowed == marked);
    auto stream = pool.map_unordered(scale{2.0}, xs);
    double sum = 0;
    while (auto r = co_await stream.next()) {
      sum += r->get();
    }
    CHECK(sum == 6.0);
  });
}

TEST_CASE("a process gets a queue as an argument, not through a capture", "[callable][process]") {
  coproc::queue<int> q;
  coproc::test::run_async([&](asio::io_context& ctx) -> asio::awaitable<void> {
    coproc::process child(ctx.get_executor(), produce, q, 10, 3);
    child.start();
    auto st = co_await child.async_join(asio::use_awaitable);
    CHECK(st.success());
    CHECK(q.get() == 10);
    CHECK(q.get() == 11);
    CHECK(q.get() == 12);
  });
}

TEST_CASE("a process gets a connection and a manager proxy as arguments", "[callable][process]") {
  coproc::test::run_async([](asio::io_context& ctx) -> asio::awaitable<void> {
    // Named ends, not a structured binding (see pipe_test); results in locals, not
    // co_await inside CHECK.
    auto ends = coproc::make_connection_pair(ctx.get_executor());
    coproc::connection& mine = ends.first;
    coproc::connection& theirs = ends.second;
    coproc::process echo(ctx.get_executor(), echo_twice, theirs);
    echo.start();
    co_await mine.async_send(21, asio::use_awaitable);
    int doubled = co_await mine.async_receive<int>(asio::use_awaitable);
    CHECK(doubled == 42);
    auto echo_status = co_await echo.async_join(asio::use_awaitable);
    CHECK(echo_status.success());

    coproc::manager<std::string, int> m(ctx.get_executor());
    auto d = m.dict();
    coproc::process writer(ctx.get_executor(), record, d, "answer", 42);
    writer.start();
    auto writer_status = co_await writer.async_join(asio::use_awaitable);
    CHECK(writer_status.success());
    auto got = co_await d.async_get("answer", asio::use_awaitable);
    CHECK(got == 42);
  });
}
