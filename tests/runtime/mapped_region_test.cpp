#include "coproc/runtime/mapped_region.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch_test_macros.hpp>
#include <cstring>
#include <filesystem>

TEST_CASE("a region created before fork is shared with the child", "[mapped_region]") {
  auto region = coproc::mapped_region::create(1 << 20);
  std::memset(region.data(), 0, 16);
  pid_t pid = ::fork();
  if (pid == 0) {
    std::memcpy(region.data(), "hello", 6);
    ::_exit(0);
  }
  REQUIRE(pid > 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(std::strcmp(reinterpret_cast<const char*>(region.data()), "hello") == 0);
}

TEST_CASE("a region is close-on-exec and named nowhere in /dev/shm", "[mapped_region]") {
  auto count_shm = [] {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/dev/shm")) {
      ++n;
    }
    return n;
  };
  std::size_t before = count_shm();
  auto region = coproc::mapped_region::create(4096);
  CHECK((::fcntl(region.fd(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK(count_shm() == before);
}

TEST_CASE("a moved-from region is empty and the target owns the mapping", "[mapped_region]") {
  auto a = coproc::mapped_region::create(4096);
  auto* p = a.data();
  coproc::mapped_region b = std::move(a);
  CHECK(!a);
  CHECK(b.data() == p);
  CHECK(b.size() == 4096);
}
