// HTTP messages as Moat's HTTPS server and client exchange them, and RFC 9457 problem details.
//
// These are plain values with no Boost or libcurl types, so the handlers of the service and the
// device code never see the transport libraries.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crypto/x509.h"

namespace moat::net {

struct HttpRequest {
  std::string method;  // as sent, e.g. "GET" (HTTP methods are case-sensitive)
  std::string target;  // the request target as sent, e.g. "/api/v1/devices?limit=10"
  std::string path;    // target up to '?', not percent-decoded
  std::string query;   // after '?', without it; "" if none
  // In arrival order, names lowercased; values as sent (without surrounding whitespace).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // exact bytes, at most HttpsServerConfig::max_body_bytes
  // The client certificate the TLS layer verified (chain to the configured client roots and
  // usage); absent if the client sent none. SECURITY: absent is not an error at this layer: a
  // handler that needs an identity must refuse the request itself.
  std::optional<crypto::Certificate> client_certificate;
  std::string remote_address;  // "ip:port" of the peer ("[v6]:port" for IPv6)

  // The value of the first header named `name` (compared case-insensitively), or "" if none.
  std::string_view Header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";  // "" = no Content-Type header
  std::string body;
  // Extra headers. The server sets Content-Length, Connection, Date and, unless given here,
  // Cache-Control: no-store; names or values with control characters are a handler bug (500).
  std::vector<std::pair<std::string, std::string>> headers;

  // The value of the first header named `name` (case-insensitively), or "" if none. On a
  // response from HttpsClient, `headers` holds every response header with lowercased names.
  std::string_view Header(std::string_view name) const;
};

// Called on an I/O thread, possibly on several at once: must be thread-safe. It may block (a
// database call), which holds only its own connection. An exception it throws becomes a 500
// problem response and is logged.
using Handler = std::function<HttpResponse(const HttpRequest&)>;

inline constexpr std::string_view kProblemContentType = "application/problem+json";
inline constexpr std::string_view kProblemTypePrefix = "urn:moat:problem:";

// An RFC 9457 problem (the type is a URN: Moat is self-hosted and owns no domain to point at):
// {"type":"urn:moat:problem:<slug>","title":...,"status":...,
// "detail":...} with Content-Type application/problem+json. `detail` goes to the client: never
// put secrets or internal state in it.
HttpResponse Problem(int status, std::string_view type_slug, std::string_view title,
                     std::string_view detail);

}  // namespace moat::net
