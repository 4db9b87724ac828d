#pragma once
/// coproc::manager: a server process hosting a dict and a list for other
/// processes (Python's multiprocessing.Manager().dict() / .list()).

#include <sys/types.h>

#include <asio/any_io_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "coproc/executors/process.hpp"
#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/pipe.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/runtime/unique_fd.hpp"

namespace coproc {
namespace detail {

enum class manager_op : std::uint8_t {
  dict_set,
  dict_get,
  dict_erase,
  dict_size,
  dict_keys,
  list_push_back,
  list_get,
  list_size,
  list_pop,
};

enum class manager_status : std::uint8_t { ok, out_of_range };

template <class K, class V>
using manager_request = std::tuple<manager_op, std::optional<K>, std::optional<V>, std::uint64_t>;
template <class K, class V>
using manager_reply = std::tuple<manager_status, std::optional<V>, std::vector<K>, std::uint64_t>;

/// Server side, non-template: keeps only `connect_fd` (and stdio) open, then
/// runs a poll loop over the connect socket and the clients, calling
/// `serve_one` for each readable client. Returns when every client end and
/// the connect socket's peers are gone.
using serve_fn = bool (*)(connection& client, void* state);
void run_manager_server(int connect_fd, serve_fn serve, void* state);

/// Sends the server end of a new socketpair over the connect socket and
/// returns the client end. Throws std::system_error(errc::peer_died) when the
/// server is gone.
unique_fd manager_connect(int connect_fd);

/// {client end, server end} of the connect socket (SOCK_SEQPACKET: each
/// connect message is atomic, so any process may use the shared client end).
std::pair<unique_fd, unique_fd> make_manager_socket();

template <class K, class V>
struct manager_store {
  std::map<K, V> dict;
  std::vector<V> list;

  manager_reply<K, V> apply(manager_request<K, V>& req) {
    auto& [op, key, value, index] = req;
    manager_reply<K, V> r{manager_status::ok, std::nullopt, {}, 0};
    switch (op) {
      case manager_op::dict_set:
        dict.insert_or_assign(std::move(*key), std::move(*value));
        break;
      case manager_op::dict_get:
        if (auto it = dict.find(*key); it != dict.end()) {
          std::get<1>(r) = it->second;
        }
        break;
      case manager_op::dict_erase:
        std::get<3>(r) = dict.erase(*key);
        break;
      case manager_op::dict_size:
        std::get<3>(r) = dict.size();
        break;
      case manager_op::dict_keys:
        for (const auto& kv : dict) {
          std::get<2>(r).push_back(kv.first);
        }
        break;
      case manager_op::list_push_back:
        list.push_back(std::move(*value));
        break;
      case manager_op::list_get:
        if (index < list.size()) {
          std::get<1>(r) = list[index];
        } else {
          std::get<0>(r) = manager_status::out_of_range;
        }
        break;
      case manager_op::list_size:
        std::get<3>(r) = list.size();
        break;
      case manager_op::list_pop:
        if (list.empty()) {
          std::get<0>(r) = manager_status::out_of_range;
        } else {
          std::get<1>(r) = std::move(list.back());
          list.pop_back();
        }
        break;
    }
    return r;
  }

  static bool serve_one(connection& client, void* state) {
    auto* self = static_cast<manager_store*>(state);
    try {
      auto req = client.receive<manager_request<K, V>>();
      bool valid = true;
      switch (std::get<0>(req)) {
        case manager_op::dict_set:
          valid = std::get<1>(req) && std::get<2>(req);
          break;
        case manager_op::dict_get:
        case manager_op::dict_erase:
          valid = std::get<1>(req).has_value();
          break;
        case manager_op::list_push_back:
          valid = std::get<2>(req).has_value();
          break;
        case manager_op::dict_size:
        case manager_op::dict_keys:
        case manager_op::list_get:
        case manager_op::list_size:
        case manager_op::list_pop:
          break;
        default:
          valid = false;
      }
      if (!valid) {
        return false;  // not a request of ours: drop the client
      }
      client.send(self->apply(req));
      return true;
    } catch (...) {
      return false;  // end of stream, corrupt frame: drop this client only
    }
  }

  static void serve(int connect_fd) {
    manager_store store;
    run_manager_server(connect_fd, &serve_one, &store);
  }
};

/// The client state shared by a manager's proxies: the connect socket and this
/// process's own connection to the server (made on first use in each process,
/// so a child forked after the proxy was obtained talks over its own socket).
class manager_client {
 public:
  manager_client(const asio::any_io_executor& ex, unique_fd connect_fd)
      : ex_(ex), connect_fd_(std::move(connect_fd)), gate_(ex, 1) {}

  const asio::any_io_executor& executor() const noexcept { return ex_; }

  /// Blocking request/reply. Throws std::system_error(errc::peer_died).
  template <class Reply, class Request>
  Reply call(const Request& req) {
    connection& c = ensure();
    try {
      c.send(req);
      return c.template receive<Reply>();
    } catch (const std::system_error& e) {
      drop();
      throw_peer_died(e);
    }
  }

  /// Async request/reply, one at a time per process (the gate orders them).
  template <class Reply, class Request>
  asio::awaitable<Reply> call_async(Request req) {
    co_await gate_.async_send(std::error_code(), true, asio::use_awaitable);
    struct release {
      manager_client* self;
      ~release() {
        self->gate_.try_receive([](std::error_code, bool) {});
      }
    } guard{this};
    bool done = false;
    try {
      connection& c = ensure();
      co_await c.async_send(req, asio::use_awaitable);
      Reply r = co_await c.template async_receive<Reply>(asio::use_awaitable);
      done = true;
      co_return r;
    } catch (const std::system_error& e) {
      if (!done) {
        drop();  // a request without its reply (cancelled, failed): reconnect next time
      }
      throw_peer_died(e);
    }
  }

 private:
  connection& ensure();
  void drop() noexcept;
  [[noreturn]] static void throw_peer_died(const std::system_error& e);

  asio::any_io_executor ex_;
  unique_fd connect_fd_;
  std::optional<connection> conn_;
  pid_t conn_pid_ = -1;
  // Asio 1.22's channel_traits is ambiguous for void(error_code): a dummy bool.
  asio::experimental::channel<void(std::error_code, bool)> gate_;
};

}  // namespace detail

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
