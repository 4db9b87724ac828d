#pragma once
// pool_options::worker_output in the host: each worker sends the read ends of
// its own stdout and stderr pipes over a socket (SCM_RIGHTS) when it starts;
// a relay thread reads them and passes whole lines on, prefixed with the
// worker's pid or to the user's callback on the pool's executor. A thread,
// not the io_context: the reads would be outstanding work that kept run()
// from ever returning, and prefixed logs keep flowing while the loop is busy.
// Private to executors/src.

#include <asio/any_io_executor.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "coproc/executors/pool_options.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc::detail {

class output_relay {
 public:
  using callback = std::function<void(int, int, std::string_view)>;

  /// Starts the thread. Throws std::system_error naming the failing call.
  output_relay(worker_output mode, callback cb, asio::any_io_executor ex);
  output_relay(const output_relay&) = delete;
  output_relay& operator=(const output_relay&) = delete;
  ~output_relay() { stop(); }

  /// The socket end a worker sends its pipes on (inherited by the zygote).
  int worker_fd() const noexcept { return worker_end_.get(); }

  /// Starts the thread; after the zygote's fork, so that it has none.
  void start();

  /// Passes on what the workers' pipes still hold (until each reports its
  /// end, at most half a second), or with `discard` drops it (the io_context
  /// is going), then joins the thread. Idempotent.
  void stop(bool discard = false) noexcept;

  /// In a process that did not create the relay (its thread is not there).
  void abandon() noexcept;

 private:
  struct stream;
  void run() noexcept;
  void receive(std::vector<stream>& streams) noexcept;
  bool pump(stream& s) noexcept;
  void emit(const stream& s, std::string_view line) noexcept;

  worker_output mode_;
  std::shared_ptr<callback> callback_;
  asio::any_io_executor ex_;
  unique_fd host_end_;
  unique_fd worker_end_;
  unique_fd stop_fd_;  // eventfd: stop() rings it
  std::thread thread_;
  std::atomic<bool> discard_{false};  // set before stop_fd_ rings
};

/// In a starting worker: makes stdout and stderr pipes whose read ends go to
/// the host over `socket_fd`. Keeps the inherited stdio if that fails.
void redirect_worker_output(int socket_fd) noexcept;

}  // namespace coproc::detail
