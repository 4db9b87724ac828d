// Pipe ping-pong between two processes: the parent drives the pipes through
// the io_uring ring (pipe_reader / pipe_writer on an asio::io_context, callback
// loop, read armed before the write) against plain blocking read/write, with
// the same child echoing by blocking read/write, in the same run. Two
// placements: both processes pinned to CPU 0, and free placement.
//
// Usage: bench_pipe_pingpong [round_trips=20000] [repetitions=7]

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <chrono>
#include <coproc/runtime/child_process.hpp>
#include <coproc/runtime/pipe_reader.hpp>
#include <coproc/runtime/pipe_writer.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr std::size_t msg_size = 8;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

[[noreturn]] void echo(int in, int out) {
  std::array<char, msg_size> buf{};
  for (;;) {
    std::size_t got = 0;
    while (got < msg_size) {
      ssize_t n = ::read(in, buf.data() + got, msg_size - got);
      if (n <= 0) {
        ::_exit(0);
      }
      got += static_cast<std::size_t>(n);
    }
    if (::write(out, buf.data(), msg_size) != static_cast<ssize_t>(msg_size)) {
      ::_exit(1);
    }
  }
}

double blocking_run(int to_child, int from_child, int rounds) {
  std::array<char, msg_size> out{"ping"};
  std::array<char, msg_size> in{};
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) {
    if (::write(to_child, out.data(), msg_size) != static_cast<ssize_t>(msg_size)) {
      std::abort();
    }
    std::size_t got = 0;
    while (got < msg_size) {
      ssize_t n = ::read(from_child, in.data() + got, msg_size - got);
      if (n <= 0) {
        std::abort();
      }
      got += static_cast<std::size_t>(n);
    }
  }
  std::chrono::duration<double, std::micro> d = std::chrono::steady_clock::now() - t0;
  return d.count() / rounds;
}

// The ring side: a callback loop; each round arms the read before the write
// so both SQEs leave in the same io_uring_submit.
struct ring_loop {
  coproc::pipe_reader& reader;
  coproc::pipe_writer& writer;
  int remaining;
  std::array<char, msg_size> out{"ping"};
  std::array<char, msg_size> in{};
  std::size_t got = 0;

  void round() {
    got = 0;
    read_more();
    writer.async_write_some(asio::buffer(out), [](std::error_code ec, std::size_t n) {
      if (ec || n != msg_size) {
        std::abort();
      }
    });
  }
  void read_more() {
    reader.async_read_some(asio::buffer(in.data() + got, msg_size - got),
                           [this](std::error_code ec, std::size_t n) {
                             if (ec) {
                               std::abort();
                             }
                             got += n;
                             if (got < msg_size) {
                               read_more();
                             } else if (--remaining > 0) {
                               round();
                             }
                           });
  }
};

double ring_run(asio::io_context& ctx, coproc::pipe_reader& reader, coproc::pipe_writer& writer,
                int rounds) {
  ring_loop loop{reader, writer, rounds};
  auto t0 = std::chrono::steady_clock::now();
  loop.round();
  ctx.restart();
  ctx.run();
  std::chrono::duration<double, std::micro> d = std::chrono::steady_clock::now() - t0;
  return d.count() / rounds;
}

void run_placement(const char* name, bool pin, int rounds, int reps) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (pin) {
    CPU_SET(0, &set);
  } else {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      CPU_SET(c, &set);
    }
  }
  if (::sched_setaffinity(0, sizeof set, &set) != 0) {
    std::perror("sched_setaffinity");
  }
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto to_child_r_to_child_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& to_child_r = std::get<0>(to_child_r_to_child_w_ends);
  [[maybe_unused]] auto& to_child_w = std::get<1>(to_child_r_to_child_w_ends);
  // Named ends, not a structured binding: clang 14 cannot capture those.
  auto from_child_r_from_child_w_ends = coproc::make_pipe();
  [[maybe_unused]] auto& from_child_r = std::get<0>(from_child_r_from_child_w_ends);
  [[maybe_unused]] auto& from_child_w = std::get<1>(from_child_r_from_child_w_ends);
  // The child inherits the affinity.
  auto child = coproc::child_process::fork_child([&] {
    to_child_w.reset();
    from_child_r.reset();
    echo(to_child_r.get(), from_child_w.get());
  });
  to_child_r.reset();
  from_child_w.reset();

  asio::io_context ctx;
  coproc::pipe_reader reader(ctx.get_executor(), std::move(from_child_r));
  coproc::pipe_writer writer(ctx.get_executor(), std::move(to_child_w));

  // Warm-up of both paths.
  blocking_run(writer.native_handle(), reader.native_handle(), rounds / 10);
  ring_run(ctx, reader, writer, rounds / 10);

  std::vector<double> blocking;
  std::vector<double> ring;
  std::vector<double> ratios;
  for (int r = 0; r < reps; ++r) {
    blocking.push_back(blocking_run(writer.native_handle(), reader.native_handle(), rounds));
    ring.push_back(ring_run(ctx, reader, writer, rounds));
    ratios.push_back(ring.back() / blocking.back());
  }
  auto [bmin, bmax] = std::minmax_element(blocking.begin(), blocking.end());
  auto [rmin, rmax] = std::minmax_element(ring.begin(), ring.end());
  auto [qmin, qmax] = std::minmax_element(ratios.begin(), ratios.end());
  std::printf(
      "%-6s blocking median %6.2f us [%6.2f..%6.2f]  ring median %6.2f us [%6.2f..%6.2f]  "
      "ratio ring/blocking %.3f (per-rep %.3f..%.3f)\n",
      name, median(blocking), *bmin, *bmax, median(ring), *rmin, *rmax,
      median(ring) / median(blocking), *qmin, *qmax);
  writer.close();  // the child sees EOF
  auto st = child.kill_and_reap();
  (void)st;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 20000;
  int reps = argc > 2 ? std::atoi(argv[2]) : 7;
  {
    asio::io_context probe_ctx;
    auto& service = coproc::uring_service::of(probe_ctx.get_executor());
    std::printf(
        "pipe ping-pong, %zu-byte messages, %d round trips x %d repetitions "
        "(probe: WAITID %s, FUTEX_WAIT %s)\n",
        msg_size, rounds, reps, service.has_waitid() ? "yes" : "no",
        service.has_futex_wait() ? "yes" : "no");
  }
  run_placement("cpu0", true, rounds, reps);
  run_placement("free", false, rounds, reps);
}
