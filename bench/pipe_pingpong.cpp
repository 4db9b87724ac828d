// Pipe ping-pong between two processes: the parent drives the pipes through
// the io_uring ring (pipe_reader / pipe_writer on an asio::io_context, callback
// loop, read armed before the write) against plain blocking read/write, and
// against the floor of the mechanism (a bare ring bridged into a bare epoll,
// no library), with the same child echoing by blocking read/write, in the same
// run. Two placements: both processes pinned to CPU 0, and free placement.
//
// Usage: bench_pipe_pingpong [round_trips=20000] [repetitions=7]

#include <liburing.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <chrono>
#include <coproc/runtime/child_process.hpp>
#include <coproc/runtime/pipe_reader.hpp>
#include <coproc/runtime/pipe_writer.hpp>
#include <coproc/runtime/unique_fd.hpp>
#include <coproc/runtime/uring_service.hpp>
#include <cstdint>
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

// The floor of any ring bridged into an epoll loop, with no Asio and no
// coproc in the way: a bare ring whose registered eventfd a bare epoll
// watches; each round submits the read and the write in one io_uring_enter,
// sleeps in epoll_wait, resets the eventfd and reaps. The kernel's path is the
// ring side's: the pipe read completes through task work, which interrupts
// the sleeping epoll_wait (EINTR) before the eventfd wakes it.
struct bare_ring {
  io_uring ring{};
  coproc::unique_fd efd;
  coproc::unique_fd ep;

  bare_ring() {
    if (io_uring_queue_init(64, &ring, 0) != 0) {
      std::abort();
    }
    efd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ep.reset(::epoll_create1(EPOLL_CLOEXEC));
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (io_uring_register_eventfd(&ring, efd.get()) != 0 ||
        ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, efd.get(), &ev) != 0) {
      std::abort();
    }
  }
  ~bare_ring() { io_uring_queue_exit(&ring); }
  bare_ring(const bare_ring&) = delete;
  bare_ring& operator=(const bare_ring&) = delete;

  double run(int to_child, int from_child, int rounds) {
    std::array<char, msg_size> out{"ping"};
    std::array<char, msg_size> in{};
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < rounds; ++i) {
      io_uring_prep_read(io_uring_get_sqe(&ring), from_child, in.data(), msg_size, 0);
      io_uring_prep_write(io_uring_get_sqe(&ring), to_child, out.data(), msg_size, 0);
      io_uring_submit(&ring);
      for (int done = 0; done < 2;) {
        io_uring_cqe* cqe = nullptr;
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
          if (cqe->res != static_cast<int>(msg_size)) {
            std::abort();  // 8 bytes into an empty pipe: never short here
          }
          io_uring_cqe_seen(&ring, cqe);
          ++done;
        }
        if (done < 2) {
          epoll_event ev{};
          if (::epoll_wait(ep.get(), &ev, 1, -1) == 1) {
            std::uint64_t v = 0;
            [[maybe_unused]] auto n = ::read(efd.get(), &v, sizeof v);
          }
        }
      }
    }
    std::chrono::duration<double, std::micro> d = std::chrono::steady_clock::now() - t0;
    return d.count() / rounds;
  }
};

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

  bare_ring bare;
  // Warm-up of every path.
  blocking_run(writer.native_handle(), reader.native_handle(), rounds / 10);
  ring_run(ctx, reader, writer, rounds / 10);
  bare.run(writer.native_handle(), reader.native_handle(), rounds / 10);

  std::vector<double> blocking;
  std::vector<double> ring;
  std::vector<double> floor;
  std::vector<double> ratios;
  for (int r = 0; r < reps; ++r) {
    blocking.push_back(blocking_run(writer.native_handle(), reader.native_handle(), rounds));
    ring.push_back(ring_run(ctx, reader, writer, rounds));
    floor.push_back(bare.run(writer.native_handle(), reader.native_handle(), rounds));
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
  auto [fmin, fmax] = std::minmax_element(floor.begin(), floor.end());
  std::printf(
      "%-6s bare ring+epoll median %6.2f us [%6.2f..%6.2f]  floor/blocking %.3f  "
      "ring/floor %.3f\n",
      name, median(floor), *fmin, *fmax, median(floor) / median(blocking),
      median(ring) / median(floor));
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
