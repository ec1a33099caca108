// An HTTPS/1.1 client with mutual TLS (Boost.Beast over Asio, as the server).
//
// TLS comes entirely from crypto::TlsClientContext: TLS 1.3 only, the server verified against
// `tls.server_roots` only (never the system store) and its certificate checked against the
// URL's host (TlsClientConfig::server_name, set from the URL when empty), the client certificate
// and key taken as objects, so a key never needs to be in a file and may live in a TPM or
// PKCS#11 token.
//
// Thread-safety: an HttpsClient is NOT thread-safe; use one per thread. It keeps one keep-alive
// connection, reused by consecutive Send calls (a request that finds it closed by the server
// before any response byte arrives is sent once more on a new connection).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "crypto/tls.h"
#include "net/http.h"

namespace moat::net {

struct HttpsClientConfig {
  std::string base_url;  // "https://host:port" (a path prefix is allowed); https only
  crypto::TlsClientConfig tls;
  std::chrono::seconds timeout{30};      // a whole request, connection included
  size_t max_response_bytes = 64 << 20;  // a longer body is kLimitExceeded
};

class HttpsClient {
 public:
  // kInvalidArgument for a base URL that is not https:// or a bad TLS configuration.
  static Result<std::unique_ptr<HttpsClient>> Create(HttpsClientConfig config);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // Sends `method` to base_url + `path` (which starts with '/'). Any HTTP status is a successful
  // Result: the caller reads HttpResponse::status. Errors: kInvalidArgument (bad method or path),
  // kUnavailable (cannot connect, timeout, connection lost), kVerificationFailed (the server's
  // certificate does not verify), kUnauthenticated (the server refused our certificate in the
  // handshake), kLimitExceeded (response over max_response_bytes), kInternal.
  // `content_type` is sent only with a body or a method other than GET/HEAD/DELETE.
  Result<HttpResponse> Send(std::string_view method, std::string_view path,
                            std::string_view body = {},
                            std::string_view content_type = "application/json");

  class Impl;

 private:
  explicit HttpsClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moat::net
