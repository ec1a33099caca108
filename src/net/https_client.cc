#include "net/https_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>
#include <optional>

namespace moat::net {

namespace {

// Response header bytes we keep; libcurl has its own (larger) limit per header line.
constexpr size_t kMaxResponseHeaderBytes = 64 << 10;

Result<void> GlobalInit() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (rc != CURLE_OK) {
    return Fail(ErrorCode::kInternal, "https client: curl_global_init: {}", curl_easy_strerror(rc));
  }
  return Ok();
}

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

std::string Lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

bool IsMethod(std::string_view m) {
  return !m.empty() && m.size() <= 16 &&
         std::all_of(m.begin(), m.end(), [](unsigned char c) { return std::isupper(c) != 0; });
}

// A path (with optional query) we are willing to put in a URL: no spaces, controls or fragment.
bool IsPath(std::string_view p) {
  return !p.empty() && p.front() == '/' && std::all_of(p.begin(), p.end(), [](unsigned char c) {
    return c > 0x20 && c < 0x7f && c != '#';
  });
}

}  // namespace

// Sets a libcurl option on curl_, returning kInternal from the enclosing function on failure.
#define MOAT_SETOPT(option, value)                                               \
  do {                                                                           \
    const CURLcode rc_ = curl_easy_setopt(curl_, option, value);                 \
    if (rc_ != CURLE_OK) {                                                       \
      return Fail(ErrorCode::kInternal, "https client: setting {}: {}", #option, \
                  curl_easy_strerror(rc_));                                      \
    }                                                                            \
  } while (false)

class HttpsClient::Impl {
 public:
  Impl(HttpsClientConfig config, std::shared_ptr<crypto::TlsClientContext> tls, CURL* curl)
      : config_(std::move(config)), tls_(std::move(tls)), curl_(curl) {}
  ~Impl() { curl_easy_cleanup(curl_); }

  // Options that stay the same for every request.
  Result<void> Setup() {
    error_[0] = '\0';
    MOAT_SETOPT(CURLOPT_ERRORBUFFER, error_);
    MOAT_SETOPT(CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts: we run in threads
    MOAT_SETOPT(CURLOPT_PROTOCOLS_STR, "https");
    MOAT_SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "https");
    MOAT_SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    MOAT_SETOPT(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    MOAT_SETOPT(CURLOPT_TIMEOUT_MS, static_cast<long>(config_.timeout.count() * 1000));
    MOAT_SETOPT(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.timeout.count() * 1000));
    MOAT_SETOPT(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(config_.max_response_bytes));
    MOAT_SETOPT(CURLOPT_TCP_NODELAY, 1L);
    MOAT_SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    // TLS: 1.3 only, peer and host verified, everything else from crypto::TlsClientContext.
    MOAT_SETOPT(CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_3) |
                                        static_cast<long>(CURL_SSLVERSION_MAX_DEFAULT));
    MOAT_SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    MOAT_SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    // SECURITY: no system CA bundle; the SSL_CTX callback installs server_roots as the only
    // trust (and replaces the store, should libcurl have loaded one anyway).
    MOAT_SETOPT(CURLOPT_CAINFO, static_cast<const char*>(nullptr));
    MOAT_SETOPT(CURLOPT_CAPATH, static_cast<const char*>(nullptr));
    MOAT_SETOPT(CURLOPT_SSL_CTX_FUNCTION, &Impl::SslContextCallback);
    MOAT_SETOPT(CURLOPT_SSL_CTX_DATA, this);
    MOAT_SETOPT(CURLOPT_WRITEFUNCTION, &Impl::WriteCallback);
    MOAT_SETOPT(CURLOPT_WRITEDATA, this);
    MOAT_SETOPT(CURLOPT_HEADERFUNCTION, &Impl::HeaderCallback);
    MOAT_SETOPT(CURLOPT_HEADERDATA, this);
    return Ok();
  }

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
    const std::string url = config_.base_url + std::string(path);
    const std::string method_string(method);
    MOAT_SETOPT(CURLOPT_URL, url.c_str());
    // Reset the method options a previous request may have set.
    MOAT_SETOPT(CURLOPT_NOBODY, 0L);
    MOAT_SETOPT(CURLOPT_HTTPGET, 1L);
    MOAT_SETOPT(CURLOPT_CUSTOMREQUEST, static_cast<const char*>(nullptr));
    const bool sends_body = !(method == "GET" || method == "HEAD") || !body.empty();
    if (method == "HEAD") {
      MOAT_SETOPT(CURLOPT_NOBODY, 1L);
    } else if (sends_body) {
      MOAT_SETOPT(CURLOPT_POST, 1L);
      MOAT_SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      // SECURITY: never NULL, which would make libcurl read the body from stdin.
      MOAT_SETOPT(CURLOPT_POSTFIELDS, body.empty() ? "" : body.data());
      if (method != "POST") MOAT_SETOPT(CURLOPT_CUSTOMREQUEST, method_string.c_str());
    } else if (method != "GET") {
      MOAT_SETOPT(CURLOPT_CUSTOMREQUEST, method_string.c_str());
    }

    SlistPtr headers;
    auto add = [&headers](const std::string& line) -> bool {
      curl_slist* head = curl_slist_append(headers.get(), line.c_str());
      if (head == nullptr) return false;  // the list is unchanged
      headers.release();                  // the same list, now one longer
      headers.reset(head);
      return true;
    };
    bool ok = add("Accept: application/json, application/problem+json");
    // No "Expect: 100-continue" round trip: our bodies are small and the server answers early
    // anyway when a header is refused.
    ok = ok && add("Expect:");
    if (sends_body && method != "DELETE" && !content_type.empty()) {
      ok = ok && add("Content-Type: " + std::string(content_type));
    } else {
      ok = ok && add("Content-Type:");  // libcurl would otherwise add a form content type
    }
    if (!ok) return Fail(ErrorCode::kInternal, "https client: curl_slist_append");
    MOAT_SETOPT(CURLOPT_HTTPHEADER, headers.get());

    response_ = HttpResponse{};
    response_.content_type.clear();
    header_bytes_ = 0;
    over_limit_ = false;
    configure_error_.reset();
    error_[0] = '\0';

    const CURLcode rc = curl_easy_perform(curl_);
    MOAT_SETOPT(CURLOPT_HTTPHEADER, static_cast<curl_slist*>(nullptr));
    if (rc != CURLE_OK) return Fail(MapError(rc, method, url));
    long status = 0;
    if (curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK) {
      return Fail(ErrorCode::kInternal, "https client: no response code");
    }
    response_.status = static_cast<int>(status);
    response_.content_type = std::string(response_.Header("content-type"));
    return std::move(response_);
  }

 private:
  Error MapError(CURLcode rc, std::string_view method, const std::string& url) const {
    const std::string detail = error_[0] != '\0' ? std::string(error_) : curl_easy_strerror(rc);
    const std::string what = fmt::format("https client: {} {}", method, url);
    if (configure_error_) return configure_error_->WithContext(what);
    if (over_limit_ || rc == CURLE_FILESIZE_EXCEEDED) {
      return Error(ErrorCode::kLimitExceeded,
                   fmt::format("{}: response over {} bytes", what, config_.max_response_bytes));
    }
    ErrorCode code = ErrorCode::kUnavailable;
    switch (rc) {
      case CURLE_PEER_FAILED_VERIFICATION:
        code = ErrorCode::kVerificationFailed;
        break;
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_SEND_ERROR:
        // In TLS 1.3 the server judges our certificate after our side of the handshake is done,
        // so its refusal arrives as an alert on the first read.
        if (detail.find("alert") != std::string::npos) {
          code = detail.find("unknown ca") != std::string::npos ||
                         detail.find("certificate") != std::string::npos
                     ? ErrorCode::kUnauthenticated
                     : ErrorCode::kUnavailable;
        }
        break;
      case CURLE_URL_MALFORMAT:
      case CURLE_UNSUPPORTED_PROTOCOL:
        code = ErrorCode::kInvalidArgument;
        break;
      case CURLE_OUT_OF_MEMORY:
      case CURLE_BAD_FUNCTION_ARGUMENT:
        code = ErrorCode::kInternal;
        break;
      default:
        break;
    }
    return Error(code, fmt::format("{}: {}", what, detail));
  }

  static CURLcode SslContextCallback(CURL* /*curl*/, void* ssl_ctx, void* user) {
    auto* self = static_cast<Impl*>(user);
    auto configured = self->tls_->Configure(static_cast<SSL_CTX*>(ssl_ctx));
    if (!configured) {
      self->configure_error_ = configured.error();
      return CURLE_SSL_CERTPROBLEM;
    }
    return CURLE_OK;
  }

  static size_t WriteCallback(char* data, size_t size, size_t count, void* user) {
    auto* self = static_cast<Impl*>(user);
    const size_t n = size * count;
    if (self->response_.body.size() + n > self->config_.max_response_bytes) {
      self->over_limit_ = true;
      return 0;  // aborts the transfer
    }
    self->response_.body.append(data, n);
    return n;
  }

  static size_t HeaderCallback(char* data, size_t size, size_t count, void* user) {
    auto* self = static_cast<Impl*>(user);
    const size_t n = size * count;
    self->header_bytes_ += n;
    if (self->header_bytes_ > kMaxResponseHeaderBytes) {
      self->over_limit_ = true;
      return 0;
    }
    const std::string_view line(data, n);
    if (line.starts_with("HTTP/")) {
      // A new status line (after a 100 Continue): only the final response's headers count.
      self->response_.headers.clear();
      return n;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return n;  // the blank line ending the header
    self->response_.headers.emplace_back(Lowercase(Trim(line.substr(0, colon))),
                                         std::string(Trim(line.substr(colon + 1))));
    return n;
  }

  const HttpsClientConfig config_;
  const std::shared_ptr<crypto::TlsClientContext> tls_;
  CURL* const curl_;
  char error_[CURL_ERROR_SIZE];
  // Per request:
  HttpResponse response_;
  size_t header_bytes_ = 0;
  bool over_limit_ = false;
  std::optional<Error> configure_error_;
};

HttpsClient::HttpsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpsClient::~HttpsClient() = default;

Result<std::unique_ptr<HttpsClient>> HttpsClient::Create(HttpsClientConfig config) {
  if (!config.base_url.starts_with("https://") || config.base_url.size() <= 8 ||
      config.base_url.find_first_of(" \r\n\t#?") != std::string::npos) {
    return Fail(ErrorCode::kInvalidArgument, "https client: base URL '{}' is not https://...",
                config.base_url);
  }
  while (config.base_url.ends_with('/')) config.base_url.pop_back();
  if (config.timeout.count() <= 0 || config.max_response_bytes == 0) {
    return Fail(ErrorCode::kInvalidArgument, "https client: bad timeout or response limit");
  }
  MOAT_TRY(GlobalInit());
  MOAT_ASSIGN_OR_RETURN(auto tls, crypto::TlsClientContext::Create(config.tls));
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Fail(ErrorCode::kInternal, "https client: curl_easy_init");
  auto impl = std::make_unique<Impl>(std::move(config), std::move(tls), curl);
  MOAT_TRY(impl->Setup());
  return std::unique_ptr<HttpsClient>(new HttpsClient(std::move(impl)));
}

Result<HttpResponse> HttpsClient::Send(std::string_view method, std::string_view path,
                                       std::string_view body, std::string_view content_type) {
  return impl_->Send(method, path, body, content_type);
}

}  // namespace moat::net
