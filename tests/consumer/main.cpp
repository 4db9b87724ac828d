// Built against the installed package only: proves find_package(coproc) works.
#include <coproc/coproc.hpp>

#include <cstdio>

int main() {
  std::error_code ec = coproc::errc::worker_crashed;
  std::printf("consumer: %s\n", ec.message().c_str());
  return ec == coproc::errc::worker_crashed ? 0 : 1;
}
