#pragma once
/// textstats: a small library that counts words, lines and bytes of texts in
/// worker processes. It is an example of a library that embeds coproc: it
/// runs on the host's own asio::io_context, owns no thread, installs no signal
/// handler and needs no macro or Asio setting from the host.
///
/// What the host must do: construct textstats::analyzer early in main(),
/// before it starts threads (see analyzer's comment for why and what happens
/// otherwise), and keep the io_context running while analyses are pending.

#include <asio/any_io_executor.hpp>
#include <chrono>
#include <coproc/coproc.hpp>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>

namespace textstats {

/// What one analysis finds.
struct stats {
  std::uint64_t bytes = 0;
  std::uint64_t lines = 0;
  std::uint64_t words = 0;
  std::uint64_t longest_word = 0;
};

/// Where the library's messages go; it may run in a worker process.
using log_sink = void (*)(const char* message);

struct options {
  std::size_t workers = 2;
  /// Called for every message of the library, also inside the workers.
  log_sink sink = nullptr;
  /// An analysis that runs longer fails with coproc::errc::task_timeout.
  std::chrono::milliseconds timeout{0};
};

namespace detail {
/// Runs in a worker. Declared here so the template below can name it.
stats analyze_text(std::string text);
/// Stores the sink where analyze_text finds it (see analyzer()).
options configure(options opt);
}  // namespace detail

/// The library's entry point.
///
/// Create it early, before the host starts threads. Its process_pool forks a
/// zygote process in this constructor, and workers are forked from that
/// zygote. fork() copies only the calling thread: a mutex that another host
/// thread holds at that moment (the host's log mutex, a cache lock, a lock
/// inside some library the task calls) stays locked forever in the zygote and
/// in every worker, so a task that takes it hangs (until options::timeout
/// fails it). The workers also see the host's memory as it was at that
/// moment: what the host sets up later (configuration, globals) is not in
/// them; tasks get what they need through their arguments. Created early, the
/// zygote is a copy of a single-threaded process, and respawns stay safe no
/// matter how many threads the host starts afterwards. `embed_host --late`
/// shows the hang.
///
/// Thread safety: async_analyze may be called from any thread.
class analyzer {
 public:
  /// Throws std::system_error naming the failing system call.
  analyzer(const asio::any_io_executor& ex, options opt)
      : options_(detail::configure(opt)),
        pool_(ex, {.workers = opt.workers, .task_timeout = opt.timeout}) {}

  /// Analyses `text` in a worker process.
  /// Completion signature: void(std::exception_ptr, stats). The exception is a
  /// std::system_error with coproc::errc::worker_crashed or task_timeout, or
  /// the task's own error as coproc::remote_error.
  /// Cancellation: as coproc::process_pool::async_submit (terminal, partial, total).
  template <class Token>
  auto async_analyze(std::string text, Token&& token) {
    return pool_.async_submit(&detail::analyze_text, std::move(text), std::forward<Token>(token));
  }

  /// Finishes pending analyses, then stops the workers. Completion signature: void().
  template <class Token>
  auto async_stop(Token&& token) {
    return pool_.async_shutdown(coproc::shutdown_mode::drain, std::forward<Token>(token));
  }

 private:
  options options_;
  coproc::process_pool pool_;
};

}  // namespace textstats
