#pragma once
/// coproc::enable_task_object: how a function object with state declares that
/// it may be a task's callable.
///
/// A task's callable is rebuilt in another process. A function pointer, a
/// member pointer and an empty class (a captureless lambda, a stateless
/// function object) carry no state, so they always qualify. A closure or a
/// function object with members may hold an address of the caller's memory (a
/// reference or pointer capture), and C++ cannot list a closure's members to
/// check: such callables are refused at compile time unless their type
/// declares that its members are values, either by
/// - a cereal serialize()/save()/load() (the members listed there cross, as
///   for any codable argument), or
/// - specialising this variable template to true for a trivially copyable type
///   without pointer or reference members (its bytes are copied as they are):
///
///     struct scale { double factor; double operator()(double x) const { return x * factor; } };
///     template <> inline constexpr bool coproc::enable_task_object<scale> = true;
///
/// Lambdas with captures cannot be declared: pass the captured data as task
/// arguments instead (`pool.submit([](double f, double x) { return f * x; }, f, x)`).

namespace coproc {

template <class F>
inline constexpr bool enable_task_object = false;

}  // namespace coproc
