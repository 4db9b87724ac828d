// A host application that embeds the textstats library (which uses coproc).
// The host owns main(), its io_context, its threads and its signals; the
// library only gets an executor.
//
//   embed_host          create the library first, then start the host's threads
//   embed_host --late   start the threads first: a host thread holds the host's
//                       log mutex while the library forks its workers, and every
//                       analysis (which logs through that mutex) hangs in the
//                       worker until the library's timeout fails it.
//
// What the host does right, in order: (1) build the io_context, (2) build the
// library (its pool forks a zygote: the process has one thread here), (3) start
// its own threads, (4) run the io_context on some of them.

#include <signal.h>

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <latch>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "textstats/textstats.hpp"

namespace {

// The host's logger: a mutex, as loggers have. The library logs through it,
// also from inside its worker processes.
std::mutex g_log_mutex;

void host_log(const char* message) {
  std::lock_guard lock(g_log_mutex);
  std::fprintf(stderr, "[log %d] %s\n", static_cast<int>(::getpid()), message);
}

bool default_disposition(int sig) {
  struct sigaction sa {};
  ::sigaction(sig, nullptr, &sa);
  return sa.sa_handler == SIG_DFL;
}

const char* texts[] = {
    "the quick brown fox\njumps over the lazy dog\n",
    "coproc runs the analysis in a worker process while the host's threads carry on\n",
    "one\ntwo\nthree\nfour\n",
    "a library embedded in a host must not own main, signals or the event loop\n",
};

}  // namespace

int main(int argc, char** argv) {
  bool late = argc > 1 && std::strcmp(argv[1], "--late") == 0;
  asio::io_context ctx;

  // The host's own background thread: a heartbeat that logs now and then.
  // In --late mode it holds the log mutex exactly while the library forks.
  std::latch holding(1), forked(1);
  std::atomic<bool> quit{false};
  auto heartbeat = [&] {
    if (late) {
      std::lock_guard lock(g_log_mutex);
      holding.count_down();
      forked.wait();
    }
    while (!quit.load()) {
      host_log("host heartbeat");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a host's own pace
    }
  };

  std::optional<textstats::analyzer> lib;
  std::vector<std::thread> threads;
  auto make_library = [&] {
    lib.emplace(
        ctx.get_executor(),
        textstats::options{
            .workers = 2, .sink = host_log, .timeout = std::chrono::milliseconds(late ? 1000 : 0)});
  };
  if (!late) {
    make_library();  // (2): one thread so far
    threads.emplace_back(heartbeat);
  } else {
    threads.emplace_back(heartbeat);
    holding.wait();
    make_library();  // too late: the heartbeat thread holds g_log_mutex now
    forked.count_down();
  }
  std::printf("host: library created %s the host's threads\n", late ? "AFTER" : "before");
  std::printf(
      "host: signal dispositions untouched by the library: %s\n",
      default_disposition(SIGINT) && default_disposition(SIGTERM) && default_disposition(SIGCHLD)
          ? "yes"
          : "NO");

  // (4) the host runs its io_context on two threads of its own, with other
  // work of its own on it (a timer here).
  auto work = asio::make_work_guard(ctx);
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&ctx] { ctx.run(); });
  }
  asio::steady_timer host_timer(ctx, std::chrono::milliseconds(5));
  host_timer.async_wait([](std::error_code) { std::printf("host: its own timer fired\n"); });

  // Analyses started from a plain thread of the host, blocking on futures.
  int failures = 0;
  std::vector<std::future<textstats::stats>> futures;
  for (const char* t : texts) {
    futures.push_back(lib->async_analyze(t, asio::use_future));
  }
  for (std::size_t i = 0; i < futures.size(); ++i) {
    try {
      textstats::stats s = futures[i].get();
      std::printf("host: text %zu: %llu bytes, %llu lines, %llu words, longest word %llu\n", i,
                  static_cast<unsigned long long>(s.bytes),
                  static_cast<unsigned long long>(s.lines),
                  static_cast<unsigned long long>(s.words),
                  static_cast<unsigned long long>(s.longest_word));
    } catch (const std::system_error& e) {
      ++failures;
      std::printf("host: text %zu failed: %s\n", i, e.what());
    }
  }
  if (late && failures > 0) {
    std::printf(
        "host: the workers inherited the log mutex locked (the library was created after a "
        "host thread took it): create the library before starting threads\n");
  }

  // And one with a plain callback, completed on one of the io_context's threads.
  std::promise<void> last;
  lib->async_analyze("callback form\n", [&](std::exception_ptr e, textstats::stats s) {
    std::printf("host: callback form: %s, %llu words\n", e ? "failed" : "ok",
                static_cast<unsigned long long>(s.words));
    last.set_value();
  });
  last.get_future().wait();

  std::promise<void> stopped;
  lib->async_stop([&] { stopped.set_value(); });
  stopped.get_future().wait();
  work.reset();
  quit = true;
  for (std::thread& t : threads) {
    t.join();
  }
  std::printf("host: done (%d failed analyses)\n", failures);
  return late ? (failures > 0 ? 0 : 1) : (failures == 0 ? 0 : 1);
}
