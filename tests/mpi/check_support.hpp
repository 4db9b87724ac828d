#pragma once
// What the MPI check programs share: a failure counter with EXPECT, the
// runner of one case on its own io_context, gates a test opens when it has
// seen what it needs, and a poll for a state the pool reaches on its own.

#include <time.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include "poll_until.hpp"

namespace check {

inline int failures = 0;

inline void expect(bool ok, const char* file, int line, const char* what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
  }
}
#define EXPECT(cond) ::check::expect(static_cast<bool>(cond), __FILE__, __LINE__, #cond)

// Holds its rank until `path` exists (at most 20 s, then throws): a gate the
// test opens when it has checked what it needs, without timing assumptions.
inline int wait_for_file(std::string path) {
  for (int i = 0; i < 20000; ++i) {
    if (::access(path.c_str(), F_OK) == 0) {
      return 1;
    }
    timespec ts{0, 1'000'000};
    ::nanosleep(&ts, nullptr);
  }
  throw std::runtime_error("gate never opened");
}

inline std::string new_gate() {
  static int n = 0;
  std::string gate =
      "/tmp/coproc_mpi_gate_" + std::to_string(::getpid()) + "_" + std::to_string(++n);
  ::unlink(gate.c_str());
  return gate;
}
inline void open_gate(const std::string& gate) {
  std::FILE* f = std::fopen(gate.c_str(), "w");
  if (f != nullptr) {
    std::fclose(f);
  }
}

// Polls the pool (1 ms) until `ready()`: a state the progress thread
// reaches on its own, observed rather than assumed after a delay.
template <class Ready>
asio::awaitable<void> until(Ready ready) {
  return coproc::test::poll_until(std::move(ready), std::chrono::milliseconds(1), 20000);
}

template <class Fn>
bool throws_code(Fn&& fn, std::error_code code) {
  try {
    fn();
  } catch (const std::system_error& e) {
    return e.code() == code;
  } catch (...) {
  }
  return false;
}

template <class Body>
void run(const char* name, Body body) {
  asio::io_context ctx;
  bool finished = false;
  asio::co_spawn(ctx, body(), [&](std::exception_ptr e) {
    finished = true;
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "%s: unexpected exception: %s\n", name, x.what());
      }
      ++failures;
    }
  });
  ctx.run_for(std::chrono::seconds(60));
  if (!finished) {
    std::fprintf(stderr, "%s: did not finish within 60 s\n", name);
    ++failures;
    std::_Exit(3);  // a pool with stuck operations cannot be destroyed cleanly
  }
}

// Tasks both check programs submit.
inline int square(int x) {
  return x * x;
}
/// The pid of the process that ran the task: a worker of some rank's pool.
inline int task_pid(int) {
  return static_cast<int>(::getpid());
}

}  // namespace check
