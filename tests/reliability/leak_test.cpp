// Leaks: worker respawns and create-destroy cycles of pipes, queues and
// segments leave fds, children, mappings and VmSize at their baseline.
// The suite runs 1,000 of each; `./x chaos` runs 10,000 (chaos_run.cpp).

#include <catch2/catch_test_macros.hpp>
#include <cstdio>

#include "leak_cycles.hpp"

TEST_CASE("1,000 worker respawns leak nothing", "[reliability][leaks]") {
  auto before = coproc::test::count_children();
  auto r = coproc::test::leaks::respawn_cycles(1000);
  coproc::test::leaks::report(r, stdout);
  CHECK(r.error.empty());
  CHECK(r.respawns >= 1000);
  CHECK(r.after.fds == r.before.fds);
  CHECK(r.after.children == r.before.children);
  CHECK(r.after.children.zombies == 0);
  CHECK(r.after.descendants == r.before.descendants);
  CHECK(r.after.descendants.zombies == 0);
  if (coproc::test::maps_lines_comparable) {
    CHECK(r.after.maps == r.before.maps);
  }
  CHECK(r.after.vm_size_kb == r.before.vm_size_kb);
  CHECK(coproc::test::count_children() == before);
}

TEST_CASE("1,000 pipe, queue and segment cycles leak nothing", "[reliability][leaks]") {
  auto r = coproc::test::leaks::resource_cycles(1000);
  coproc::test::leaks::report(r, stdout);
  CHECK(r.error.empty());
  CHECK(r.after.fds == r.before.fds);
  CHECK(r.after.children == r.before.children);
  if (coproc::test::maps_lines_comparable) {
    CHECK(r.after.maps == r.before.maps);
  }
  CHECK(r.after.vm_size_kb == r.before.vm_size_kb);
}
