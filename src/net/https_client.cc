#include "net/https_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include "core/log.h"

// Why Beast and not libcurl: the client runs in moatd, the device's trusted computing base.
// libcurl brought GnuTLS, Kerberos, LDAP, SSH, RTMP and IDN into that process (and ~12 MiB of
// mapped libraries into its resident set) for one job: HTTPS/1.1 to one server with one TLS
// configuration. Beast over Asio is already the server's stack, speaks exactly that, and lets
// the TLS context come straight from crypto::TlsClientContext.

namespace moat::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using ErrorCodeT = boost::system::error_code;

namespace {

// Response header bytes we accept.
constexpr uint32_t kMaxResponseHeaderBytes = 64 << 10;

bool IsMethod(std::string_view m) {
  return !m.empty() && m.size() <= 16 &&
         std::all_of(m.begin(), m.end(), [](unsigned char c) { return std::isupper(c) != 0; });
}

// A path (with optional query) we are willing to put in a request line: no spaces, controls or
// fragment.
bool IsPath(std::string_view p) {
  return !p.empty() && p.front() == '/' && std::all_of(p.begin(), p.end(), [](unsigned char c) {
    return c > 0x20 && c < 0x7f && c != '#';
  });
}

std::string Lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

struct Url {
  std::string host;       // without brackets
  std::string port;       // decimal
  std::string authority;  // for the Host header: host[:port] as written
  std::string prefix;     // path prefix without a trailing '/', or ""
};

// "https://host[:port][/prefix]"; the host is a DNS name, an IPv4 address or "[IPv6]".
Result<Url> ParseUrl(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return Fail(ErrorCode::kInvalidArgument, "https client: base URL '{}' {}", url, why);
  };
  constexpr std::string_view kScheme = "https://";
  if (!url.starts_with(kScheme)) return bad("is not https://...");
  std::string_view rest = url.substr(kScheme.size());
  const size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  Url out;
  out.authority = std::string(authority);
  if (slash != std::string_view::npos) out.prefix = std::string(rest.substr(slash));
  while (out.prefix.ends_with('/')) out.prefix.pop_back();
  std::string_view host = authority;
  std::string_view port = "443";
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("has an unclosed '['");
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':')) return bad("has text after ']'");
      port = after.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return bad("has no host");
  if (!std::all_of(host.begin(), host.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_';
      })) {
    return bad("has a host with characters outside [A-Za-z0-9.-_:]");
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535) {
    return bad("has a bad port");
  }
  out.host = std::string(host);
  out.port = std::to_string(value);
  return out;
}

bool IsCertificateAlert(const std::string& detail) {
  return detail.find("alert") != std::string::npos &&
         (detail.find("certificate") != std::string::npos ||
          detail.find("unknown ca") != std::string::npos);
}

}  // namespace

class HttpsClient::Impl {
 public:
  Impl(HttpsClientConfig config, Url url, SSL_CTX* native)
      : config_(std::move(config)), url_(std::move(url)), ssl_ctx_(native), resolver_(ioc_) {}

  ~Impl() { Disconnect(); }

  Result<HttpResponse> Send(std::string_view method, std::string_view path, std::string_view body,
                            std::string_view content_type) {
    if (!IsMethod(method)) {
      return Fail(ErrorCode::kInvalidArgument, "https client: bad method '{}'", method);
    }
    if (!IsPath(path)) {
      return Fail(ErrorCode::kInvalidArgument, "https client: bad path '{}'", path);
    }
    if (content_type.find_first_of("\r\n") != std::string_view::npos) {
      return Fail(ErrorCode::kInvalidArgument, "https client: bad content type");
    }
    const std::string target = url_.prefix + std::string(path);
    const std::string what = fmt::format("https client: {} https://{}{}", method,
                                         url_.authority, target);

    http::request<http::string_body> request;
    request.method_string(beast::string_view(method.data(), method.size()));
    request.target(target);
    request.version(11);
    request.set(http::field::host, url_.authority);
    request.set(http::field::accept, "application/json, application/problem+json");
    request.keep_alive(true);
    const bool sends_body = !(method == "GET" || method == "HEAD") || !body.empty();
    if (sends_body) {
      if (method != "DELETE" && !content_type.empty()) {
        request.set(http::field::content_type,
                    beast::string_view(content_type.data(), content_type.size()));
      }
      request.body() = std::string(body);
      request.content_length(body.size());
    }

    // One deadline for the whole request, connection included.
    const auto deadline = std::chrono::steady_clock::now() + config_.timeout;
    // A kept-alive connection the server has meanwhile closed fails before any response byte
    // arrives: then (and only then) the request goes once more on a new connection.
    for (int attempt = 0;; ++attempt) {
      const bool reused = stream_.has_value();
      if (!reused) MOAT_TRY(Connect(deadline, what));
      beast::get_lowest_layer(*stream_).expires_at(deadline);
      http::response_parser<http::string_body> parser;
      parser.header_limit(kMaxResponseHeaderBytes);
      parser.body_limit(config_.max_response_bytes);
      if (method == "HEAD") parser.skip(true);
      // The request goes out while the response header is read: a server may answer before it
      // has read the whole body (413, 401) and then close, and that answer is what the caller
      // needs, not the broken pipe of the rest of the upload. Header first because Beast 1.74
      // does not apply body_limit to a Content-Length that arrives in the same read as the body,
      // so the declared length is checked here (the server does the same); the limit then
      // bounds chunked and close-delimited bodies as they arrive.
      ErrorCodeT write_ec;
      ErrorCodeT ec;
      bool written = false;
      bool header_read = false;
      http::async_write(*stream_, request, [&](ErrorCodeT e, size_t) {
        write_ec = e;
        written = true;
      });
      http::async_read_header(*stream_, buffer_, parser, [&](ErrorCodeT e, size_t) {
        ec = e;
        header_read = true;
        // An early answer: stop sending the rest of the request.
        if (!written) beast::get_lowest_layer(*stream_).socket().cancel();
      });
      ioc_.restart();
      ioc_.run();
      if (!written || !header_read) ec = asio::error::operation_aborted;  // cannot happen
      const bool request_complete = written && !write_ec;
      // Without a response header the write's error (if any) tells more.
      if (ec && !parser.got_some() && write_ec) ec = write_ec;
      if (!ec) {
        if (auto length = parser.content_length();
            length && *length > config_.max_response_bytes) {
          ec = http::error::body_limit;
        }
      }
      if (!ec && !parser.is_done()) {
        ec = Run([&](auto done) { http::async_read(*stream_, buffer_, parser, done); });
      }
      // An answer to a request not sent whole leaves the connection in an unknown state.
      const bool reusable = request_complete;
      if (!ec && parser.get().body().size() > config_.max_response_bytes) {
        ec = http::error::body_limit;
      }
      if (ec) {
        Disconnect();
        if (reused && attempt == 0 && !parser.got_some() && ec != beast::error::timeout) {
          log::Debug("{}: kept-alive connection lost ({}); reconnecting", what, ec.message());
          continue;
        }
        return Fail(MapError(ec, what));
      }
      http::response<http::string_body> message = parser.release();
      HttpResponse response;
      response.status = static_cast<int>(message.result_int());
      for (const auto& field : message) {
        response.headers.emplace_back(
            Lowercase(std::string_view(field.name_string().data(), field.name_string().size())),
            std::string(field.value()));
      }
      response.content_type = std::string(response.Header("content-type"));
      response.body = std::move(message.body());
      if (!message.keep_alive() || !reusable) Disconnect();
      return response;
    }
  }

 private:
  using Stream = beast::ssl_stream<beast::tcp_stream>;

  // Starts one asynchronous operation through `initiate(handler)` and runs the private
  // io_context until it completes; returns its error code.
  template <typename Initiate>
  ErrorCodeT Run(Initiate&& initiate) {
    ErrorCodeT result;
    bool done = false;
    initiate([&](ErrorCodeT ec, auto&&...) {
      result = ec;
      done = true;
    });
    ioc_.restart();
    ioc_.run();
    if (!done) return asio::error::operation_aborted;  // cannot happen: run() ends on completion
    return result;
  }

  Result<void> Connect(std::chrono::steady_clock::time_point deadline, const std::string& what) {
    ErrorCodeT ec;
    tcp::resolver::results_type endpoints;
    ioc_.restart();
    resolver_.async_resolve(url_.host, url_.port,
                            [&](ErrorCodeT resolve_ec, tcp::resolver::results_type results) {
                              ec = resolve_ec;
                              endpoints = std::move(results);
                            });
    ioc_.run();
    if (ec) {
      return Fail(ErrorCode::kUnavailable, "{}: cannot resolve {}: {}", what, url_.host,
                  ec.message());
    }
    stream_.emplace(ioc_, ssl_ctx_);
    beast::get_lowest_layer(*stream_).expires_at(deadline);
    ec = Run([&](auto done) {
      beast::get_lowest_layer(*stream_).async_connect(
          endpoints, [done](ErrorCodeT connect_ec, const tcp::endpoint&) mutable {
            done(connect_ec);
          });
    });
    if (!ec) {
      ErrorCodeT option_ec;
      beast::get_lowest_layer(*stream_).socket().set_option(tcp::no_delay(true), option_ec);
      if (auto sni = crypto::SetServerNameIndication(stream_->native_handle(), url_.host); !sni) {
        Disconnect();
        return Fail(sni.error().WithContext(what));
      }
      ec = Run([&](auto done) { stream_->async_handshake(asio::ssl::stream_base::client, done); });
    }
    if (ec) {
      Disconnect();
      return Fail(MapError(ec, what));
    }
    buffer_.clear();
    return Ok();
  }

  void Disconnect() {
    if (!stream_) return;
    // No close_notify round trip: the server treats a closed socket the same way, and a
    // device must not wait on an unresponsive peer to let go of a connection.
    ErrorCodeT ignored;
    beast::get_lowest_layer(*stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(*stream_).close();
    stream_.reset();
    buffer_.clear();
  }

  Error MapError(const ErrorCodeT& ec, const std::string& what) const {
    const std::string detail = ec.message();
    if (ec == http::error::body_limit) {
      return Error(ErrorCode::kLimitExceeded,
                   fmt::format("{}: response over {} bytes", what, config_.max_response_bytes));
    }
    if (ec == http::error::header_limit) {
      return Error(ErrorCode::kLimitExceeded,
                   fmt::format("{}: response headers over {} bytes", what, kMaxResponseHeaderBytes));
    }
    if (ec == beast::error::timeout) {
      return Error(ErrorCode::kUnavailable,
                   fmt::format("{}: timed out after {} s", what, config_.timeout.count()));
    }
    ErrorCode code = ErrorCode::kUnavailable;
    if (ec.category() == asio::error::get_ssl_category()) {
      if (detail.find("certificate verify failed") != std::string::npos) {
        code = ErrorCode::kVerificationFailed;
      } else if (IsCertificateAlert(detail)) {
        // In TLS 1.3 the server judges our certificate after our side of the handshake is
        // done, so its refusal arrives as an alert on the first read.
        code = ErrorCode::kUnauthenticated;
      }
    }
    return Error(code, fmt::format("{}: {}", what, detail));
  }

  const HttpsClientConfig config_;
  const Url url_;
  asio::io_context ioc_{1};
  asio::ssl::context ssl_ctx_;  // owns the SSL_CTX configured by crypto::TlsClientContext
  tcp::resolver resolver_;
  std::optional<Stream> stream_;  // the kept-alive connection, if any
  beast::flat_buffer buffer_;     // bytes read past the last response (none, normally)
};

HttpsClient::HttpsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpsClient::~HttpsClient() = default;

Result<std::unique_ptr<HttpsClient>> HttpsClient::Create(HttpsClientConfig config) {
  if (config.base_url.find_first_of(" \r\n\t#?") != std::string::npos) {
    return Fail(ErrorCode::kInvalidArgument, "https client: base URL '{}' is not https://...",
                config.base_url);
  }
  MOAT_ASSIGN_OR_RETURN(Url url, ParseUrl(config.base_url));
  if (config.timeout.count() <= 0 || config.max_response_bytes == 0) {
    return Fail(ErrorCode::kInvalidArgument, "https client: bad timeout or response limit");
  }
  // The server's certificate must name the host we connect to (inside chain verification).
  if (config.tls.server_name.empty()) config.tls.server_name = url.host;
  MOAT_ASSIGN_OR_RETURN(auto tls, crypto::TlsClientContext::Create(config.tls));
  MOAT_ASSIGN_OR_RETURN(SSL_CTX * native, tls->NewNative());
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(std::move(config), std::move(url), native);
  } catch (const std::exception& e) {
    return Fail(ErrorCode::kInternal, "https client: {}", e.what());
  }
  return std::unique_ptr<HttpsClient>(new HttpsClient(std::move(impl)));
}

Result<HttpResponse> HttpsClient::Send(std::string_view method, std::string_view path,
                                       std::string_view body, std::string_view content_type) {
  try {
    return impl_->Send(method, path, body, content_type);
  } catch (const std::exception& e) {
    return Fail(ErrorCode::kInternal, "https client: {}", e.what());
  }
}

}  // namespace moat::net
