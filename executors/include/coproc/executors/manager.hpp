#pragma once
/// coproc::manager: a server process hosting a dict and a list for other
/// processes (Python's multiprocessing.Manager().dict() / .list()).

#include <sys/types.h>

#include <asio/any_io_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "coproc/executors/detail/manager_protocol.hpp"
#include "coproc/executors/process.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/pipe.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/runtime/detail/context_executor.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {

/// A dict (key -> value) hosted by a manager. Cheap to copy; obtain it in the
/// parent and use it there (async_* forms from coroutines) or in any process
/// forked afterwards (blocking forms: each process gets its own connection).
/// Every call is one round trip to the server.
///
/// Errors: the server's death gives std::system_error(errc::peer_died) at
/// every proxy (never a hang); a request cancelled before its reply drops this
/// process's connection (the next call reconnects).
/// Async forms: completion signature void(std::exception_ptr, R) (they run as
/// coroutines via asio::co_spawn; with use_awaitable they throw); cancellation:
/// terminal.
/// Thread safety: one thread per process at a time; in the parent, do not mix
/// blocking calls with async ones in flight.
template <class Key, class Value>
class dict_proxy {
 public:
  using request = detail::manager_request<Key, Value>;
  using reply = detail::manager_reply<Key, Value>;

  explicit dict_proxy(std::shared_ptr<detail::manager_client> c) : client_(std::move(c)) {}

  void set(Key k, Value v) { call({detail::manager_op::dict_set, std::move(k), std::move(v), 0}); }
  std::optional<Value> get(Key k) {
    return std::get<1>(call({detail::manager_op::dict_get, std::move(k), std::nullopt, 0}));
  }
  /// Returns true if the key was there.
  bool erase(Key k) {
    return std::get<3>(call({detail::manager_op::dict_erase, std::move(k), std::nullopt, 0})) != 0;
  }
  std::size_t size() {
    return std::get<3>(call({detail::manager_op::dict_size, std::nullopt, std::nullopt, 0}));
  }
  /// The keys, in ascending order.
  std::vector<Key> keys() {
    return std::get<2>(call({detail::manager_op::dict_keys, std::nullopt, std::nullopt, 0}));
  }

  template <class Token>
  auto async_set(Key k, Value v, Token&& token) {
    return async(
        {detail::manager_op::dict_set, std::move(k), std::move(v), 0}, [](reply) {},
        std::forward<Token>(token));
  }
  template <class Token>
  auto async_get(Key k, Token&& token) {
    return async(
        {detail::manager_op::dict_get, std::move(k), std::nullopt, 0},
        [](reply r) { return std::move(std::get<1>(r)); }, std::forward<Token>(token));
  }
  template <class Token>
  auto async_erase(Key k, Token&& token) {
    return async(
        {detail::manager_op::dict_erase, std::move(k), std::nullopt, 0},
        [](reply r) { return std::get<3>(r) != 0; }, std::forward<Token>(token));
  }
  template <class Token>
  auto async_size(Token&& token) {
    return async(
        {detail::manager_op::dict_size, std::nullopt, std::nullopt, 0},
        [](reply r) { return static_cast<std::size_t>(std::get<3>(r)); },
        std::forward<Token>(token));
  }
  template <class Token>
  auto async_keys(Token&& token) {
    return async(
        {detail::manager_op::dict_keys, std::nullopt, std::nullopt, 0},
        [](reply r) { return std::move(std::get<2>(r)); }, std::forward<Token>(token));
  }

 private:
  reply call(const request& req) { return client_->template call<reply>(req); }

  template <class Extract, class Token>
  auto async(request req, Extract extract, Token&& token) {
    auto run = [](std::shared_ptr<detail::manager_client> c, request rq,
                  Extract ex) -> asio::awaitable<decltype(ex(std::declval<reply>()))> {
      reply r = co_await c->template call_async<reply>(std::move(rq));
      co_return ex(std::move(r));
    };
    return asio::co_spawn(client_->executor(), run(client_, std::move(req), extract),
                          std::forward<Token>(token));
  }

  std::shared_ptr<detail::manager_client> client_;
};

/// A list of values hosted by a manager; same rules as dict_proxy.
/// get(i) with i >= size() and pop() on an empty list throw std::out_of_range.
template <class Key, class Value>
class list_proxy {
 public:
  using request = detail::manager_request<Key, Value>;
  using reply = detail::manager_reply<Key, Value>;

  explicit list_proxy(std::shared_ptr<detail::manager_client> c) : client_(std::move(c)) {}

  void push_back(Value v) {
    call({detail::manager_op::list_push_back, std::nullopt, std::move(v), 0});
  }
  Value get(std::size_t i) {
    return value_of(call({detail::manager_op::list_get, std::nullopt, std::nullopt, i}));
  }
  std::size_t size() {
    return std::get<3>(call({detail::manager_op::list_size, std::nullopt, std::nullopt, 0}));
  }
  /// Removes and returns the last value.
  Value pop() {
    return value_of(call({detail::manager_op::list_pop, std::nullopt, std::nullopt, 0}));
  }

  template <class Token>
  auto async_push_back(Value v, Token&& token) {
    return async(
        {detail::manager_op::list_push_back, std::nullopt, std::move(v), 0}, [](reply) {},
        std::forward<Token>(token));
  }
  template <class Token>
  auto async_get(std::size_t i, Token&& token) {
    return async({detail::manager_op::list_get, std::nullopt, std::nullopt, i}, &value_of,
                 std::forward<Token>(token));
  }
  template <class Token>
  auto async_size(Token&& token) {
    return async(
        {detail::manager_op::list_size, std::nullopt, std::nullopt, 0},
        [](reply r) { return static_cast<std::size_t>(std::get<3>(r)); },
        std::forward<Token>(token));
  }
  template <class Token>
  auto async_pop(Token&& token) {
    return async({detail::manager_op::list_pop, std::nullopt, std::nullopt, 0}, &value_of,
                 std::forward<Token>(token));
  }

 private:
  static Value value_of(reply r) {
    if (std::get<0>(r) != detail::manager_status::ok || !std::get<1>(r)) {
      throw std::out_of_range("coproc::list_proxy: index out of range");
    }
    return std::move(*std::get<1>(r));
  }
  reply call(const request& req) { return client_->template call<reply>(req); }

  template <class Extract, class Token>
  auto async(request req, Extract extract, Token&& token) {
    auto run = [](std::shared_ptr<detail::manager_client> c, request rq,
                  Extract ex) -> asio::awaitable<decltype(ex(std::declval<reply>()))> {
      reply r = co_await c->template call_async<reply>(std::move(rq));
      co_return ex(std::move(r));
    };
    return asio::co_spawn(client_->executor(), run(client_, std::move(req), extract),
                          std::forward<Token>(token));
  }

  std::shared_ptr<detail::manager_client> client_;
};

/// A forked server process hosting one dict (Key -> Value) and one list of
/// Value (Python's multiprocessing.Manager with .dict() and .list(), typed).
/// Key and Value must be codable; Key must be ordered (std::map).
///
/// The server is a coproc::process: it dies with its owner's thread, keeps
/// only its own sockets open, and is killed and reaped by shutdown() or the
/// destructor. Clients connect over a SOCK_SEQPACKET socket (an atomic
/// message carrying a new socket through SCM_RIGHTS), so every process gets
/// its own stream and a client dying mid-request affects only itself.
///
/// Create the manager early (before threads and before the processes that
/// will use it), obtain proxies, then fork.
/// Thread safety: distinct objects: safe; shared objects: unsafe.
template <class Key, class Value>
class manager {
 public:
  /// Forks the server. Throws std::system_error naming the failing call.
  /// The same on `ctx`'s executor.
  explicit manager(asio::io_context& ctx) : manager(detail::context_executor(ctx)) {}
  explicit manager(const asio::any_io_executor& ex) {
    auto [client_end, server_end] = detail::make_manager_socket();
    server_.emplace(ex, &detail::manager_store<Key, Value>::serve, server_end.get());
    server_->start();
    server_end.reset();  // only the server holds it: its death is end of stream
    client_ = std::make_shared<detail::manager_client>(ex, std::move(client_end));
  }
  manager(const manager&) = delete;
  manager& operator=(const manager&) = delete;

  dict_proxy<Key, Value> dict() const { return dict_proxy<Key, Value>(client_); }
  list_proxy<Key, Value> list() const { return list_proxy<Key, Value>(client_); }

  /// The server's pid.
  pid_t pid() const noexcept { return server_ ? server_->pid() : -1; }
  /// The server process (join, kill, exit_code).
  process& server() noexcept { return *server_; }

  /// Kills the server (SIGKILL) and reaps it; proxies then fail with peer_died.
  void shutdown() {
    server_->kill();
    server_.reset();
  }

 private:
  std::optional<process> server_;
  std::shared_ptr<detail::manager_client> client_;
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <class Key, class Value>
inline constexpr bool is_process_shared_v<dict_proxy<Key, Value>> = true;
template <class Key, class Value>
inline constexpr bool is_process_shared_v<list_proxy<Key, Value>> = true;

}  // namespace coproc
