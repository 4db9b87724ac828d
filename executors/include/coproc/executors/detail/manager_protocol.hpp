#pragma once
// The manager's wire protocol, its server-side store and the client end that
// dict_proxy and list_proxy share.

#include <sys/types.h>
#include <asio/any_io_executor.hpp>
#include <asio/co_spawn.hpp>
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

namespace coproc::detail {

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
  manager_client(const asio::any_io_executor& ex, unique_fd connect_fd);
  ~manager_client();
  manager_client(const manager_client&) = delete;
  manager_client& operator=(const manager_client&) = delete;

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
    co_await acquire_gate();
    struct release {
      manager_client* self;
      ~release() { self->release_gate(); }
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
  // The gate lives in manager.cpp, so that Asio's experimental channel is not
  // parsed and instantiated by every includer of coproc.hpp.
  struct gate;
  asio::awaitable<void> acquire_gate();
  void release_gate() noexcept;

  asio::any_io_executor ex_;
  unique_fd connect_fd_;
  std::optional<connection> conn_;
  pid_t conn_pid_ = -1;
  std::unique_ptr<gate> gate_;
};

}  // namespace coproc::detail
