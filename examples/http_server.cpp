// An async HTTP/1.1 server on one Asio event loop that offloads its compute
// endpoint to a coproc::process_pool, while cheap requests are answered on
// the loop itself. Requests are parsed by the nodejs http_parser (Debian's
// libhttp-parser-dev). Keep-alive and pipelining are honoured.
//
//   GET  /ping                 "pong" (answered on the loop)
//   GET  /primes?below=N       primes below N, counted in a worker (N <= 10^8)
//   GET  /crash                a worker that dies (SIGSEGV): the answer is 500,
//                              the worker is replaced, the server keeps serving
//   POST /echo                 the request body back
//   GET  /stats                the pool's counters
//
// Errors: 400 for malformed requests, 404/405 for unknown paths/methods, 413
// for a body over --max-body, 500 for a crashed or failing computation, 504
// for one past the pool's task timeout. SIGINT or SIGTERM stops accepting,
// lets requests in progress finish (closing idle keep-alive connections),
// drains the pool and exits 0.
//
//   http_server [--address A] [--port P] [--workers N] [--max-body BYTES] [--grace S]
//               [--normal-workers] [--help]
//
// With --port 0 (the default) the kernel picks a free port. The first line on
// stdout is "listening on http://ADDRESS:PORT", which scripts wait for.

#include <getopt.h>
#include <http_parser.h>
#include <signal.h>

#include <algorithm>
#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <climits>
#include <coproc/coproc.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

namespace {

using asio::ip::tcp;

// --- the work the pool does ------------------------------------------------

std::uint64_t count_primes(std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t count = 0;
  for (std::uint64_t n = std::max<std::uint64_t>(lo, 2); n < hi; ++n) {
    bool prime = n == 2 || n == 3 || (n % 2 != 0 && n % 3 != 0);
    for (std::uint64_t d = 5; prime && d * d <= n; d += 6) {
      prime = n % d != 0 && n % (d + 2) != 0;
    }
    count += prime ? 1 : 0;
  }
  return count;
}

int crash() {
  ::raise(SIGSEGV);
  return 0;
}

// --- options ---------------------------------------------------------------

struct options {
  std::string address = "127.0.0.1";
  unsigned short port = 0;
  std::size_t workers = std::max(1u, std::thread::hardware_concurrency());
  std::size_t max_body = 1 << 20;
  unsigned grace_seconds = 5;   // how long requests in progress may finish at shutdown
  bool normal_workers = false;  // workers at normal CPU priority instead of SCHED_IDLE
};

void usage(std::FILE* out) {
  std::fputs(
      "usage: http_server [options]\n"
      "  -a, --address A     address to listen on (default 127.0.0.1)\n"
      "  -p, --port P        port (default 0: the kernel picks one)\n"
      "  -w, --workers N     worker processes (default: the number of CPUs)\n"
      "  -b, --max-body N    largest request body in bytes (default 1048576)\n"
      "  -g, --grace S       seconds requests in progress get at shutdown (default 5)\n"
      "  -n, --normal-workers  workers at normal CPU priority (default: SCHED_IDLE, so\n"
      "                      the loop always gets a CPU first)\n"
      "  -h, --help          this text\n",
      out);
}

[[noreturn]] void bad_usage(const char* what) {
  std::fprintf(stderr, "http_server: %s\n\n", what);
  usage(stderr);
  std::exit(2);
}

unsigned long long parse_number(const char* text, const char* what, unsigned long long max) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v > max || text[0] == '-') {
    bad_usage(what);
  }
  return v;
}

options parse_options(int argc, char** argv) {
  options o;
  const option longs[] = {
      {"address", required_argument, nullptr, 'a'}, {"port", required_argument, nullptr, 'p'},
      {"workers", required_argument, nullptr, 'w'}, {"max-body", required_argument, nullptr, 'b'},
      {"grace", required_argument, nullptr, 'g'},   {"normal-workers", no_argument, nullptr, 'n'},
      {"help", no_argument, nullptr, 'h'},          {nullptr, 0, nullptr, 0}};
  int c = 0;
  while ((c = ::getopt_long(argc, argv, "a:p:w:b:g:nh", longs, nullptr)) != -1) {
    switch (c) {
      case 'a':
        o.address = optarg;
        break;
      case 'p':
        o.port = static_cast<unsigned short>(parse_number(optarg, "bad --port", 65535));
        break;
      case 'w':
        o.workers = parse_number(optarg, "bad --workers", 1024);
        if (o.workers == 0) {
          bad_usage("--workers must be at least 1");
        }
        break;
      case 'b':
        o.max_body = parse_number(optarg, "bad --max-body", SIZE_MAX);
        break;
      case 'g':
        o.grace_seconds = static_cast<unsigned>(parse_number(optarg, "bad --grace", 3600));
        break;
      case 'n':
        o.normal_workers = true;
        break;
      case 'h':
        usage(stdout);
        std::exit(0);
      default:
        bad_usage("unknown option");
    }
  }
  if (optind != argc) {
    bad_usage("unexpected argument");
  }
  return o;
}

// --- HTTP ------------------------------------------------------------------

struct response {
  int status = 200;
  std::string body;
  bool close = false;  // send "Connection: close" and close afterwards
};

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Content Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

std::string serialise(const response& r) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) +
                    "\r\nServer: coproc-example\r\nContent-Type: text/plain\r\nContent-Length: " +
                    std::to_string(r.body.size()) +
                    "\r\nConnection: " + (r.close ? "close" : "keep-alive") + "\r\n\r\n";
  out += r.body;
  return out;
}

// One request as the parser's callbacks assemble it.
struct request {
  std::string url;
  std::string body;
  unsigned method = 0;
  bool keep_alive = false;
  bool complete = false;
  bool too_large = false;
  std::size_t max_body = 0;

  void reset() {
    url.clear();
    body.clear();
    complete = too_large = false;
  }
};

request& req_of(http_parser* p) {
  return *static_cast<request*>(p->data);
}

int on_url(http_parser* p, const char* at, std::size_t n) {
  req_of(p).url.append(at, n);
  return req_of(p).url.size() > 8192 ? 1 : 0;  // an absurd URL is a bad request
}

int on_headers_complete(http_parser* p) {
  request& r = req_of(p);
  // A declared length over the limit is refused before reading the body.
  if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > r.max_body) {
    r.too_large = true;
    http_parser_pause(p, 1);
  }
  return 0;
}

int on_body(http_parser* p, const char* at, std::size_t n) {
  request& r = req_of(p);
  if (r.body.size() + n > r.max_body) {  // chunked bodies have no declared length
    r.too_large = true;
    http_parser_pause(p, 1);
    return 0;
  }
  r.body.append(at, n);
  return 0;
}

int on_message_complete(http_parser* p) {
  request& r = req_of(p);
  r.method = p->method;
  r.keep_alive = http_should_keep_alive(p) != 0;
  r.complete = true;
  // Stop after each request: it is answered before the next one (pipelined
  // in the same buffer) is parsed.
  http_parser_pause(p, 1);
  return 0;
}

const http_parser_settings& parser_settings() {
  static const http_parser_settings s = [] {
    http_parser_settings s{};
    http_parser_settings_init(&s);
    s.on_url = on_url;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    return s;
  }();
  return s;
}

// --- the server --------------------------------------------------------------

class session;

struct server {
  server(asio::io_context& ctx, coproc::process_pool& pool, const options& opt)
      : pool(pool), opt(opt), acceptor(ctx), signals(ctx, SIGINT, SIGTERM), idle(ctx) {}

  coproc::process_pool& pool;
  options opt;
  tcp::acceptor acceptor;
  asio::signal_set signals;
  asio::steady_timer idle;  // cancelled when the last session ends during shutdown
  std::set<session*> sessions;
  bool stopping = false;
  std::uint64_t served = 0;
};

// What a connection owns. Its coroutine owns it; the server only points at it
// while it is in `sessions`.
class session {
 public:
  session(server& srv, tcp::socket socket) : srv_(srv), socket_(std::move(socket)) {
    srv_.sessions.insert(this);
  }
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  ~session() {
    srv_.sessions.erase(this);
    if (srv_.stopping && srv_.sessions.empty()) {
      srv_.idle.cancel();
    }
  }

  tcp::socket& socket() { return socket_; }
  bool busy = false;  // a request is being answered

 private:
  server& srv_;
  tcp::socket socket_;
};

std::uint64_t query_number(std::string_view url, std::string_view key, bool& ok) {
  http_parser_url u;
  http_parser_url_init(&u);
  ok = false;
  if (http_parser_parse_url(url.data(), url.size(), 0, &u) != 0 ||
      (u.field_set & (1 << UF_QUERY)) == 0) {
    return 0;
  }
  std::string_view q = url.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  while (!q.empty()) {
    std::string_view pair = q.substr(0, q.find('&'));
    q.remove_prefix(std::min(q.size(), pair.size() + 1));
    if (pair.substr(0, pair.find('=')) == key && pair.find('=') != std::string_view::npos) {
      std::string value(pair.substr(pair.find('=') + 1));
      char* end = nullptr;
      errno = 0;
      unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      ok = !value.empty() && value[0] != '-' && errno == 0 && *end == '\0';
      return v;
    }
  }
  return 0;
}

std::string path_of(const std::string& url) {
  http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(url.data(), url.size(), 0, &u) != 0 ||
      (u.field_set & (1 << UF_PATH)) == 0) {
    return {};
  }
  return url.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
}

// A failed computation becomes an HTTP status; the server itself carries on.
response failure(const std::exception& e) {
  if (auto* se = dynamic_cast<const std::system_error*>(&e)) {
    if (se->code() == coproc::errc::task_timeout) {
      return {504, std::string("computation timed out: ") + e.what() + "\n"};
    }
    if (se->code() == coproc::errc::pool_stopped) {
      return {503, "shutting down\n", true};
    }
  }
  return {500, std::string("computation failed: ") + e.what() + "\n"};
}

asio::awaitable<response> handle(server& srv, const request& req) {
  std::string path = path_of(req.url);
  if (path == "/ping" || path == "/primes" || path == "/crash" || path == "/stats") {
    if (req.method != HTTP_GET && req.method != HTTP_HEAD) {
      co_return response{405, "use GET\n"};
    }
  } else if (path == "/echo") {
    if (req.method != HTTP_POST) {
      co_return response{405, "use POST\n"};
    }
    co_return response{200, req.body};
  } else {
    co_return response{404, "no such path\n"};
  }
  if (path == "/ping") {
    co_return response{200, "pong\n"};
  }
  if (path == "/stats") {
    coproc::pool_stats s = srv.pool.stats();
    co_return response{200, "workers_alive " + std::to_string(s.workers_alive) + "\nworkers_busy " +
                                std::to_string(s.workers_busy) + "\ntasks_completed " +
                                std::to_string(s.tasks_completed) + "\ntasks_failed " +
                                std::to_string(s.tasks_failed) + "\nworker_crashes " +
                                std::to_string(s.worker_crashes) + "\nrespawns " +
                                std::to_string(s.respawns) + "\n"};
  }
  try {
    if (path == "/crash") {
      co_await srv.pool.submit(crash);
      co_return response{200, "the worker survived?\n"};
    }
    bool ok = false;
    std::uint64_t below = query_number(req.url, "below", ok);
    if (!ok || below > 100'000'000) {
      co_return response{400, "want /primes?below=N with N <= 100000000\n"};
    }
    std::uint64_t n = co_await srv.pool.submit(count_primes, std::uint64_t{0}, below);
    co_return response{200, std::to_string(n) + "\n"};
  } catch (const std::exception& e) {
    co_return failure(e);
  }
}

asio::awaitable<void> write_response(tcp::socket& socket, response r) {
  std::string bytes = serialise(r);
  co_await asio::async_write(socket, asio::buffer(bytes), asio::use_awaitable);
}

// After refusing a request whose body we did not read, read and drop what the
// client still sends (bounded in bytes and time) before closing: closing with
// unread data makes the kernel send RST, which can destroy the refusal in the
// client's receive buffer before it read it.
asio::awaitable<void> discard_input(tcp::socket& sock) {
  std::array<char, 16384> sink;
  std::size_t total = 0;
  std::error_code ec;
  while (!ec && total < (std::size_t{4} << 20)) {
    total += co_await sock.async_read_some(asio::buffer(sink),
                                           asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> lingering_close(tcp::socket& sock) {
  using namespace asio::experimental::awaitable_operators;
  std::error_code ec;
  sock.shutdown(tcp::socket::shutdown_send, ec);
  asio::steady_timer limit(sock.get_executor(), std::chrono::seconds(2));
  co_await (discard_input(sock) || limit.async_wait(asio::redirect_error(asio::use_awaitable, ec)));
}

asio::awaitable<void> serve(server& srv, tcp::socket socket) {
  session self(srv, std::move(socket));
  tcp::socket& sock = self.socket();
  sock.set_option(tcp::no_delay(true));
  request req;
  req.max_body = srv.opt.max_body;
  http_parser parser;
  http_parser_init(&parser, HTTP_REQUEST);
  parser.data = &req;
  std::array<char, 16384> buf;
  std::size_t have = 0, start = 0;  // unparsed bytes are buf[start, have)
  try {
    for (;;) {
      if (start == have) {
        start = have = 0;
        std::error_code ec;
        have = co_await sock.async_read_some(asio::buffer(buf),
                                             asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          break;  // the peer closed, or shutdown closed an idle connection
        }
      }
      std::size_t used =
          http_parser_execute(&parser, &parser_settings(), buf.data() + start, have - start);
      start += used;
      // g++ 12 destroys a braced temporary in a co_await expression twice:
      // every response is a named local before it is awaited on.
      auto err = HTTP_PARSER_ERRNO(&parser);
      response refusal;
      if (err == HPE_PAUSED && req.too_large) {
        refusal = {413, "body over the limit\n", true};
      } else if (err != HPE_OK && err != HPE_PAUSED) {
        refusal = {400, std::string("bad request: ") + http_errno_description(err) + "\n", true};
      } else if (parser.upgrade != 0) {
        refusal = {400, "upgrades are not supported\n", true};
      }
      if (refusal.status != 200) {
        co_await write_response(sock, std::move(refusal));
        co_await lingering_close(sock);
        break;
      }
      if (!req.complete) {
        start = have;  // all consumed, need more bytes
        continue;
      }
      self.busy = true;
      response r = co_await handle(srv, req);
      ++srv.served;
      r.close = r.close || !req.keep_alive || srv.stopping;
      if (req.method == HTTP_HEAD) {
        std::string bytes = serialise(r);
        bytes.resize(bytes.size() - r.body.size());
        co_await asio::async_write(sock, asio::buffer(bytes), asio::use_awaitable);
      } else {
        co_await write_response(sock, r);
      }
      self.busy = false;
      if (r.close) {
        break;
      }
      req.reset();
      http_parser_pause(&parser, 0);
    }
  } catch (const std::system_error&) {
    // A write to a peer that went away: nothing to tell it.
  }
  std::error_code ignored;
  sock.shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> accept_loop(server& srv) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    std::error_code ec;
    tcp::socket s =
        co_await srv.acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !srv.acceptor.is_open()) {
      co_return;
    }
    if (!ec) {
      asio::co_spawn(ex, serve(srv, std::move(s)), asio::detached);
    }
  }
}

// SIGINT/SIGTERM: stop accepting, close idle connections, let busy ones finish
// their request (they close after it), drain the pool.
asio::awaitable<void> wait_for_signal(server& srv) {
  std::error_code ec;
  int sig = co_await srv.signals.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return;
  }
  std::printf("signal %d: shutting down after %llu requests\n", sig,
              static_cast<unsigned long long>(srv.served));
  std::fflush(stdout);
  srv.stopping = true;
  srv.acceptor.close(ec);
  for (session* s : srv.sessions) {
    if (!s->busy) {
      s->socket().shutdown(tcp::socket::shutdown_receive, ec);
      s->socket().cancel(ec);
    }
  }
  if (!srv.sessions.empty()) {
    // Requests in progress get --grace seconds; then their sockets are closed.
    srv.idle.expires_after(std::chrono::seconds(srv.opt.grace_seconds));
    co_await srv.idle.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    for (session* s : srv.sessions) {
      s->socket().close(ec);
    }
  }
  co_await srv.pool.async_shutdown(coproc::shutdown_mode::drain, asio::use_awaitable);
  std::printf("stopped cleanly\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  options opt = parse_options(argc, argv);
  asio::io_context ctx(1);
  // First thing: the pool forks its zygote while this process has one thread.
  // Workers run under SCHED_IDLE (pool_options::idle_priority): computations
  // are throughput work, while the loop answers cheap requests and must get a
  // CPU the moment one arrives, even when every CPU is busy computing. Measured
  // here with wrk saturating /primes on 2 CPUs: /ping p99 0.9-1.5 ms with idle
  // workers, 3.2-3.7 ms with workers at nice 10 or nice 0.
  coproc::process_pool pool(ctx.get_executor(), {.workers = opt.workers,
                                                 .task_timeout = std::chrono::seconds(30),
                                                 .idle_priority = !opt.normal_workers});
  server srv(ctx, pool, opt);
  try {
    tcp::endpoint ep(asio::ip::make_address(opt.address), opt.port);
    srv.acceptor.open(ep.protocol());
    srv.acceptor.set_option(tcp::acceptor::reuse_address(true));
    srv.acceptor.bind(ep);
    srv.acceptor.listen(1024);
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "http_server: cannot listen on %s:%u: %s\n", opt.address.c_str(), opt.port,
                 e.what());
    return 1;
  }
  auto local = srv.acceptor.local_endpoint();
  std::printf("listening on http://%s:%u (%zu workers)\n", local.address().to_string().c_str(),
              local.port(), pool.size());
  std::fflush(stdout);
  asio::co_spawn(ctx, accept_loop(srv), asio::detached);
  asio::co_spawn(ctx, wait_for_signal(srv), asio::detached);
  ctx.run();
  return 0;
}
