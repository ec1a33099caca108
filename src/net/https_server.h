// An asynchronous HTTPS/1.1 server with mutual TLS (Boost.Beast/Asio).
//
// Each connection: accept -> TLS handshake (with a timeout) -> a keep-alive loop of request ->
// handler -> response. The TLS policy (TLS 1.3 only, which client certificates are accepted) is
// the crypto::TlsServerContext's; a handshake that fails just closes the connection. Requests
// the server cannot parse, or whose header or body is over its limit, get a problem+json answer
// from the server itself (400, 431, 413) and the connection closes; the handler never sees them.
//
// Threads: one io_context run by `threads` threads, each connection serialised on its own
// strand. Handlers run on those threads; a handler that blocks holds only its own connection,
// and the other threads keep serving.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "crypto/tls.h"
#include "net/http.h"

namespace moat::net {

struct HttpsServerConfig {
  std::string address = "127.0.0.1";  // IPv4 or IPv6 literal to listen on
  uint16_t port = 0;                  // 0 = an ephemeral port; see HttpsServer::port()
  int threads = 0;                    // 0 = one per core
  size_t max_body_bytes = 1 << 20;    // larger: 413
  // Optional: a tighter limit per request, decided from the method and path once the header is
  // read (e.g. large uploads on one route only). The effective limit is the smaller of the two.
  std::function<size_t(std::string_view method, std::string_view path)> body_limit_for;
  size_t max_header_bytes = 16 << 10;  // request line + header fields; larger: 431
  // From the first byte of a request to its last (and the TLS handshake of a new connection).
  std::chrono::seconds read_timeout{30};
  // How long a keep-alive connection may wait for its next request.
  std::chrono::seconds idle_timeout{60};
  // Also the handshake deadline; a slow client cannot hold a connection without completing it.
  std::chrono::seconds handshake_timeout{10};
  // Connections past this are closed as soon as they are accepted.
  size_t max_connections = 10000;
};

// Counters since Create, for tests and monitoring.
struct HttpsServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_refused = 0;  // over max_connections
  uint64_t handshakes_failed = 0;
  uint64_t requests = 0;  // answered, by the handler or by the server itself
  uint64_t active_connections = 0;
};

class HttpsServer {
 public:
  // Binds and listens (so port() is known) but serves nothing until Start(). kIo if the address
  // cannot be bound; kInvalidArgument for a bad address or limits.
  static Result<std::unique_ptr<HttpsServer>> Create(const HttpsServerConfig& config,
                                                     std::shared_ptr<crypto::TlsServerContext> tls,
                                                     Handler handler);
  ~HttpsServer();  // Shutdown(0) if still running
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  uint16_t port() const;

  // Starts the I/O threads and returns. At most once.
  void Start();

  // Graceful stop: closes the listening socket at once (new connections are refused), closes
  // idle keep-alive connections, lets requests in flight finish and be answered (with
  // "Connection: close") for up to `grace`, then closes whatever is left and joins the threads.
  // Idempotent; call from any thread but an I/O thread (i.e. not from a handler).
  void Shutdown(std::chrono::milliseconds grace);

  HttpsServerStats stats() const;

  class Impl;

 private:
  explicit HttpsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moat::net
