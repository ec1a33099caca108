#include "net/https_server.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <ctime>
#include <exception>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/log.h"

namespace moat::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using ErrorCodeT = boost::system::error_code;

namespace {

// Bytes asked of the socket while waiting for the first bytes of a request.
constexpr size_t kFirstReadBytes = 4096;
// Room in the read buffer beyond the header limit (the body streams through it).
constexpr size_t kBufferSlack = 64 << 10;
// How long a closing connection waits for the client's close_notify while discarding what it
// still sends, so that an early answer (413) is not lost to a TCP reset.
constexpr std::chrono::seconds kLingerTimeout{2};
// The longest Shutdown() waits for the I/O threads to close the listener.
constexpr std::chrono::seconds kAcceptorCloseTimeout{10};
// Headers a handler may not set: the server owns the framing.
constexpr std::string_view kServerOwnedHeaders[] = {"content-length", "transfer-encoding",
                                                    "connection", "date"};
constexpr size_t kMaxHandlerHeaderBytes = 8 << 10;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

std::string_view Sv(beast::string_view s) { return {s.data(), s.size()}; }

std::string Lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Makes client-controlled text safe for one log line: control bytes become '?', and it is cut.
std::string ForLog(std::string_view s, size_t max = 200) {
  std::string out;
  out.reserve(std::min(s.size(), max));
  for (char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? '?' : c);
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string HttpDate(std::chrono::system_clock::time_point now) {
  const time_t t = std::chrono::system_clock::to_time_t(now);
  struct tm tm_utc;
  gmtime_r(&t, &tm_utc);
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  return fmt::format("{}, {:02} {} {} {:02}:{:02}:{:02} GMT", kDays[tm_utc.tm_wday], tm_utc.tm_mday,
                     kMonths[tm_utc.tm_mon], tm_utc.tm_year + 1900, tm_utc.tm_hour, tm_utc.tm_min,
                     tm_utc.tm_sec);
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  });
}

bool IsFieldValue(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); });
}

bool IsHttpError(const ErrorCodeT& ec) {
  return ec.category() == http::make_error_code(http::error::end_of_stream).category();
}

std::string EndpointString(const tcp::endpoint& ep) {
  const auto address = ep.address();
  if (address.is_v6()) return fmt::format("[{}]:{}", address.to_string(), ep.port());
  return fmt::format("{}:{}", address.to_string(), ep.port());
}

}  // namespace

class Session;

class HttpsServer::Impl {
 public:
  Impl(const HttpsServerConfig& config, std::shared_ptr<crypto::TlsServerContext> tls,
       Handler handler)
      : config_(config),
        tls_(std::move(tls)),
        handler_(std::move(handler)),
        ssl_ctx_(tls_->AcquireNative()),
        thread_count_(config.threads > 0
                          ? config.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        // The hint tells Asio how many threads will run it (1 would enable single-thread
        // shortcuts).
        ioc_(std::make_unique<asio::io_context>(thread_count_)) {
    accept_strand_.emplace(asio::make_strand(*ioc_));
    acceptor_ = std::make_unique<tcp::acceptor>(*accept_strand_);
    accept_retry_.emplace(*accept_strand_);
  }

  ~Impl() {
    Shutdown(std::chrono::milliseconds(0));
    // Everything bound to the io_context goes before it (a strand must not outlive its
    // service); sessions still referenced by unrun handlers die with it, while *this is whole.
    accept_retry_.reset();
    acceptor_.reset();
    accept_strand_.reset();
    ioc_.reset();
  }

  Result<void> Bind() {
    ErrorCodeT ec;
    const auto address = asio::ip::make_address(config_.address, ec);
    if (ec) {
      return Fail(ErrorCode::kInvalidArgument, "https server: bad listen address '{}'",
                  config_.address);
    }
    const tcp::endpoint endpoint(address, config_.port);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Fail(ErrorCode::kIo, "https server: cannot listen on {}: {}", EndpointString(endpoint),
                  ec.message());
    }
    port_ = acceptor_->local_endpoint(ec).port();
    if (ec) return Fail(ErrorCode::kIo, "https server: local_endpoint: {}", ec.message());
    return Ok();
  }

  void Start() {
    {
      std::lock_guard lock(lifecycle_mu_);
      if (started_ || stopped_) return;
      started_ = true;
    }
    asio::post(*accept_strand_, [this] { DoAccept(); });
    const int n = thread_count_;
    threads_.reserve(static_cast<size_t>(n));
    try {
      for (int i = 0; i < n; ++i) threads_.emplace_back([this] { RunIoThread(); });
    } catch (const std::system_error& e) {
      // Out of threads (EAGAIN): serve with those that started; with none, nothing runs the
      // io_context and Shutdown() closes the acceptor itself.
      log::Error("https server: started {} of {} I/O threads: {}", threads_.size(), n, e.what());
    }
    log::Info("https server: listening on {}:{} with {} threads", config_.address, port_,
              threads_.size());
  }

  void Shutdown(std::chrono::milliseconds grace) {
    bool started;
    {
      std::lock_guard lock(lifecycle_mu_);
      if (stopped_) return;
      stopped_ = true;
      started = started_;
    }
    stopping_.store(true);
    if (!started || threads_.empty()) {
      ErrorCodeT ec;
      acceptor_->close(ec);
      return;
    }
    // Close the listening socket first, on its strand, and wait for it: from here on a new
    // connection is refused by the kernel. The wait is bounded so that a wedged I/O thread
    // cannot hang shutdown: after kAcceptorCloseTimeout the threads are stopped anyway and the
    // acceptor closes as ~Impl destroys it.
    auto closed = std::make_shared<std::promise<void>>();
    auto closed_future = closed->get_future();
    asio::post(*accept_strand_, [this, closed] {
      ErrorCodeT ec;
      acceptor_->close(ec);
      accept_retry_->cancel();
      closed->set_value();
    });
    if (closed_future.wait_for(kAcceptorCloseTimeout) != std::future_status::ready) {
      log::Error("https server: the I/O threads did not close the listener within {} s; "
                 "stopping them",
                 std::chrono::duration_cast<std::chrono::seconds>(kAcceptorCloseTimeout).count());
    }
    // Idle connections close now; busy ones finish their request (see Session::AwaitRequest).
    for (const auto& session : LiveSessions()) CloseIfIdle(session);
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, grace, [this] { return sessions_.empty(); });
      if (!sessions_.empty()) {
        log::Warn("https server: {} connections still busy after the grace period; closing them",
                  sessions_.size());
      }
    }
    ioc_->stop();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    log::Info("https server: stopped");
  }

  HttpsServerStats Stats() const {
    HttpsServerStats s;
    s.connections_accepted = accepted_.load();
    s.connections_refused = refused_.load();
    s.handshakes_failed = handshakes_failed_.load();
    s.requests = requests_.load();
    std::lock_guard lock(mu_);
    s.active_connections = sessions_.size();
    return s;
  }

  uint16_t port() const { return port_; }
  const HttpsServerConfig& config() const { return config_; }
  const Handler& handler() const { return handler_; }
  asio::ssl::context& ssl_context() { return ssl_ctx_; }
  bool stopping() const { return stopping_.load(); }
  void CountHandshakeFailure() { handshakes_failed_.fetch_add(1); }
  void CountRequest() { requests_.fetch_add(1); }

  void Unregister(Session* session) {
    std::lock_guard lock(mu_);
    sessions_.erase(session);
    cv_.notify_all();
  }

 private:
  void RunIoThread() {
    // A throwing completion handler ends only its own connection; the thread keeps serving.
    for (;;) {
      try {
        ioc_->run();
        return;
      } catch (const std::exception& e) {
        log::Error("https server: unexpected exception on an I/O thread: {}", e.what());
      } catch (...) {
        log::Error("https server: unexpected non-standard exception on an I/O thread");
      }
    }
  }

  void DoAccept() {
    if (stopping()) return;
    acceptor_->async_accept(
        asio::make_strand(*ioc_),
        asio::bind_executor(*accept_strand_, [this](ErrorCodeT ec, tcp::socket socket) {
          OnAccept(ec, std::move(socket));
        }));
  }

  void OnAccept(ErrorCodeT ec, tcp::socket socket);

  std::vector<std::shared_ptr<Session>> LiveSessions() {
    std::vector<std::shared_ptr<Session>> live;
    std::lock_guard lock(mu_);
    for (auto& [ptr, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    return live;
  }

  static void CloseIfIdle(const std::shared_ptr<Session>& session);

  const HttpsServerConfig config_;
  const std::shared_ptr<crypto::TlsServerContext> tls_;
  const Handler handler_;
  asio::ssl::context ssl_ctx_;  // owns one reference to tls_'s SSL_CTX
  const int thread_count_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;  // guarded by mu_

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> handshakes_failed_{0};
  std::atomic<uint64_t> requests_{0};

  std::mutex lifecycle_mu_;
  bool started_ = false;  // guarded by lifecycle_mu_
  bool stopped_ = false;  // guarded by lifecycle_mu_

  // Declared last so they go first (see ~Impl).
  std::unique_ptr<asio::io_context> ioc_;
  std::optional<asio::strand<asio::io_context::executor_type>> accept_strand_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::optional<asio::steady_timer> accept_retry_;
  uint16_t port_ = 0;
  std::vector<std::thread> threads_;

  friend class Session;
};

// One TLS connection. Everything it does runs on its own strand (the socket's executor), so its
// members need no locks; the server reaches it only by posting to that strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpsServer::Impl& server, tcp::socket socket, std::string remote)
      : server_(server),
        stream_(beast::tcp_stream(std::move(socket)), server.ssl_context()),
        remote_(std::move(remote)),
        buffer_(server.config().max_header_bytes + kBufferSlack) {}

  ~Session() { server_.Unregister(this); }

  void Start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->Handshake(); });
  }

  // Runs on the strand (posted by the server when it shuts down).
  void CloseIfIdle() {
    if (state_ == State::kIdle || state_ == State::kHandshake) {
      beast::get_lowest_layer(stream_).cancel();
    }
  }

 private:
  enum class State { kHandshake, kIdle, kReading, kHandling, kWriting, kClosing };

  const HttpsServerConfig& config() const { return server_.config(); }

  void Handshake() {
    state_ = State::kHandshake;
    beast::get_lowest_layer(stream_).expires_after(config().handshake_timeout);
    stream_.async_handshake(asio::ssl::stream_base::server,
                            [self = shared_from_this()](ErrorCodeT ec) { self->OnHandshake(ec); });
  }

  void OnHandshake(ErrorCodeT ec) {
    if (ec) {
      // A failed handshake (no TLS 1.3, a certificate that does not verify, a timeout) is
      // routine on the internet: counted, logged at debug, closed.
      server_.CountHandshakeFailure();
      log::Debug("https: TLS handshake with {} failed: {}", remote_, ec.message());
      return;
    }
    auto peer = crypto::PeerCertificate(stream_.native_handle());
    if (peer) {
      client_certificate_ = std::move(*peer);
      peer_name_ = ForLog(client_certificate_->SubjectCommonName(), 64);
    } else if (peer.error().code() != ErrorCode::kNotFound) {
      // SECURITY: cannot happen with our verify settings; never serve an unverified identity.
      server_.CountHandshakeFailure();
      log::Warn("https: {}: {}", remote_, peer.error());
      return;
    }
    AwaitRequest(/*first=*/true);
  }

  // Waits for the first bytes of the next request, under the idle timeout (the read timeout for
  // a new connection's first request).
  void AwaitRequest(bool first) {
    state_ = State::kIdle;
    if (server_.stopping()) return Close();
    parser_.emplace();
    parser_->body_limit(config().max_body_bytes);
    parser_->header_limit(static_cast<uint32_t>(
        std::min<size_t>(config().max_header_bytes, std::numeric_limits<uint32_t>::max())));
    if (buffer_.size() > 0) return ReadHeader();  // a pipelined request is already here
    beast::get_lowest_layer(stream_).expires_after(first ? config().read_timeout
                                                         : config().idle_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            [self = shared_from_this()](ErrorCodeT ec, size_t n) {
                              // The client closed, the idle timeout, or CloseIfIdle: drop the
                              // connection (no lingering: no answer is in flight).
                              if (ec) return;
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    state_ = State::kReading;
    started_ = std::chrono::steady_clock::now();
    beast::get_lowest_layer(stream_).expires_after(config().read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](ErrorCodeT ec, size_t) {
                              if (ec) return self->OnReadError(ec);
                              self->OnHeader();
                            });
  }

  void OnHeader() {
    const auto& header = parser_->get();
    // SECURITY: both framings at once is the classic request-smuggling shape (RFC 9112 6.1);
    // refuse it rather than pick one.
    if (header.count(http::field::content_length) > 0 &&
        header.count(http::field::transfer_encoding) > 0) {
      return Reject(Problem(400, "malformed-request", "Bad Request",
                            "both Content-Length and Transfer-Encoding"));
    }
    body_limit_ = config().max_body_bytes;
    if (config().body_limit_for) {
      const auto target = std::string_view(header.target().data(), header.target().size());
      const auto path = target.substr(0, target.find('?'));
      body_limit_ = std::min(
          body_limit_, config().body_limit_for(std::string_view(header.method_string().data(),
                                                                header.method_string().size()),
                                               path));
      parser_->body_limit(body_limit_);
      // Beast compares Content-Length with the limit while parsing the header only, so a tighter
      // limit set now must be checked here for a sized body (chunked bodies are checked as they
      // arrive).
      if (auto length = parser_->content_length(); length && *length > body_limit_) {
        return Reject(Problem(413, "payload-too-large", "Payload Too Large",
                              fmt::format("the request body is over {} bytes", body_limit_)));
      }
    }
    if (!parser_->is_done() && beast::iequals(header[http::field::expect], "100-continue")) {
      // The header passed every limit: invite the body.
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](ErrorCodeT ec, size_t) {
                          if (ec) return;
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    if (parser_->is_done()) return OnRequest();
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](ErrorCodeT ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->OnRequest();
                     });
  }

  void OnReadError(ErrorCodeT ec) {
    if (!IsHttpError(ec) || ec == http::error::end_of_stream ||
        ec == http::error::partial_message) {
      // The client went away, timed out, or the server is stopping: nothing to answer.
      log::Debug("https: {}: connection ended while reading: {}", remote_, ec.message());
      return;
    }
    HttpResponse problem;
    if (ec == http::error::body_limit) {
      problem = Problem(413, "payload-too-large", "Payload Too Large",
                        fmt::format("the request body is over {} bytes", body_limit_));
    } else if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      problem =
          Problem(431, "request-header-fields-too-large", "Request Header Fields Too Large",
                  fmt::format("the request header is over {} bytes", config().max_header_bytes));
    } else {
      problem = Problem(400, "malformed-request", "Bad Request",
                        fmt::format("malformed HTTP/1.1 request: {}", ec.message()));
    }
    Reject(problem);
  }

  // Answers a request the server refuses by itself, then closes the connection.
  void Reject(const HttpResponse& problem) {
    const auto& header = parser_->get();
    method_ = ForLog(Sv(header.method_string()), 16);
    const std::string_view target = Sv(header.target());
    path_ = ForLog(target.substr(0, target.find('?')));
    if (method_.empty()) method_ = "-";
    if (path_.empty()) path_ = "-";
    Respond(problem, /*head=*/false, /*keep_alive=*/false);
  }

  void OnRequest() {
    state_ = State::kHandling;
    beast::get_lowest_layer(stream_).expires_never();
    http::request<http::string_body> message = parser_->release();
    parser_.reset();

    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    const size_t q = request.target.find('?');
    request.path = request.target.substr(0, q);
    if (q != std::string::npos) request.query = request.target.substr(q + 1);
    for (const auto& field : message) {
      request.headers.emplace_back(Lowercase(Sv(field.name_string())), std::string(field.value()));
    }
    request.body = std::move(message.body());
    request.client_certificate = client_certificate_;
    request.remote_address = remote_;
    method_ = ForLog(request.method, 16);
    path_ = ForLog(request.path);

    HttpResponse response;
    try {
      response = server_.handler()(request);
    } catch (const std::exception& e) {
      log::Error("https: handler threw on {} {}: {}", method_, path_, e.what());
      response = Problem(500, "internal-error", "Internal Server Error", "");
    } catch (...) {
      log::Error("https: handler threw on {} {}", method_, path_);
      response = Problem(500, "internal-error", "Internal Server Error", "");
    }
    const bool keep_alive = message.keep_alive() && !server_.stopping();
    Respond(std::move(response), message.method() == http::verb::head, keep_alive);
  }

  // Checks what a handler returned; a violation is a handler bug and becomes a 500.
  std::optional<std::string> Invalid(const HttpResponse& r) const {
    if (r.status < 200 || r.status > 599) return fmt::format("status {}", r.status);
    if (!IsFieldValue(r.content_type) || r.content_type.size() > kMaxHandlerHeaderBytes) {
      return "content type";
    }
    for (const auto& [name, value] : r.headers) {
      if (!IsToken(name) || !IsFieldValue(value) ||
          name.size() + value.size() > kMaxHandlerHeaderBytes) {
        return fmt::format("header '{}'", ForLog(name, 64));
      }
    }
    return std::nullopt;
  }

  void Respond(HttpResponse given, bool head, bool keep_alive) {
    state_ = State::kWriting;
    HttpResponse* r = &given;
    HttpResponse fallback;
    if (auto bad = Invalid(given)) {
      log::Error("https: handler returned an invalid response to {} {}: {}", method_, path_, *bad);
      fallback = Problem(500, "internal-error", "Internal Server Error", "");
      r = &fallback;
    }
    status_ = r->status;
    response_.emplace();
    auto& res = *response_;
    res.version(11);
    res.result(static_cast<unsigned>(r->status));
    res.set(http::field::date, HttpDate(std::chrono::system_clock::now()));
    bool has_cache_control = false;
    for (const auto& [name, value] : r->headers) {
      const std::string lower = Lowercase(name);
      if (std::find(std::begin(kServerOwnedHeaders), std::end(kServerOwnedHeaders), lower) !=
          std::end(kServerOwnedHeaders)) {
        continue;
      }
      if (lower == "content-type") continue;  // HttpResponse::content_type says it
      has_cache_control = has_cache_control || lower == "cache-control";
      res.insert(name, value);
    }
    // SECURITY: API answers carry identities and state; no intermediary may store them.
    if (!has_cache_control) res.set(http::field::cache_control, "no-store");
    res.set("X-Content-Type-Options", "nosniff");
    const bool bodyless_status = r->status == 204 || r->status == 304;
    if (!r->content_type.empty() && !bodyless_status) {
      res.set(http::field::content_type, r->content_type);
    }
    if (!bodyless_status) {
      res.content_length(r->body.size());
      if (!head) res.body() = std::move(r->body);
    }
    res.keep_alive(keep_alive);

    server_.CountRequest();
    beast::get_lowest_layer(stream_).expires_after(config().read_timeout);
    http::async_write(stream_, res, [self = shared_from_this(), keep_alive](ErrorCodeT ec, size_t) {
      self->OnWritten(ec, keep_alive);
    });
  }

  void OnWritten(ErrorCodeT ec, bool keep_alive) {
    const auto elapsed =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_);
    // One line per request; never bodies or query strings (they may carry secrets).
    log::Info("https: {} {} {} {:.1f}ms peer={} remote={}{}", method_, path_, status_,
              elapsed.count(), peer_name_, remote_, ec ? " (write failed)" : "");
    response_.reset();
    if (ec) return;
    if (!keep_alive) return Close();
    AwaitRequest(/*first=*/false);
  }

  // A server-side close: close_notify, then discard what the client still sends (briefly) so
  // that it reads our last answer instead of a reset.
  void Close() {
    state_ = State::kClosing;
    beast::get_lowest_layer(stream_).expires_after(kLingerTimeout);
    stream_.async_shutdown([self = shared_from_this()](ErrorCodeT) {
      ErrorCodeT ignored;
      beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  friend class HttpsServer::Impl;

  HttpsServer::Impl& server_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  const std::string remote_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> response_;
  std::optional<crypto::Certificate> client_certificate_;
  size_t body_limit_ = 0;  // of the request being read
  std::string peer_name_ = "-";
  State state_ = State::kHandshake;
  // For the request log line.
  std::chrono::steady_clock::time_point started_;
  std::string method_;
  std::string path_;
  int status_ = 0;
};

void HttpsServer::Impl::OnAccept(ErrorCodeT ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor_->is_open()) return;
  if (ec) {
    // E.g. out of file descriptors: back off briefly instead of spinning.
    log::Warn("https server: accept failed: {}", ec.message());
    accept_retry_->expires_after(std::chrono::milliseconds(100));
    accept_retry_->async_wait([this](ErrorCodeT wait_ec) {
      if (!wait_ec) DoAccept();
    });
    return;
  }
  if (stopping()) return;  // the socket closes as it goes out of scope
  accepted_.fetch_add(1);
  bool over_limit;
  {
    std::lock_guard lock(mu_);
    over_limit = sessions_.size() >= config_.max_connections;
  }
  if (over_limit) {
    refused_.fetch_add(1);
    log::Debug("https server: over {} connections; closing a new one", config_.max_connections);
    ErrorCodeT ignored;
    socket.close(ignored);
    return DoAccept();
  }
  ErrorCodeT option_ec;
  socket.set_option(tcp::no_delay(true), option_ec);  // small TLS records go out at once
  ErrorCodeT endpoint_ec;
  const auto remote = socket.remote_endpoint(endpoint_ec);
  auto session = std::make_shared<Session>(*this, std::move(socket),
                                           endpoint_ec ? "?" : EndpointString(remote));
  {
    std::lock_guard lock(mu_);
    sessions_.emplace(session.get(), session);
  }
  session->Start();
  DoAccept();
}

void HttpsServer::Impl::CloseIfIdle(const std::shared_ptr<Session>& session) {
  // The Session's executor is its strand (the accepted socket's).
  asio::post(session->stream_.get_executor(), [session] { session->CloseIfIdle(); });
}

// ---- HttpsServer ----

HttpsServer::HttpsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpsServer::~HttpsServer() = default;

Result<std::unique_ptr<HttpsServer>> HttpsServer::Create(
    const HttpsServerConfig& config, std::shared_ptr<crypto::TlsServerContext> tls,
    Handler handler) {
  if (!tls) return Fail(ErrorCode::kInvalidArgument, "https server: no TLS context");
  if (!handler) return Fail(ErrorCode::kInvalidArgument, "https server: no handler");
  if (config.max_header_bytes < 256 || config.max_header_bytes > (64 << 20)) {
    return Fail(ErrorCode::kInvalidArgument, "https server: max_header_bytes {} out of range",
                config.max_header_bytes);
  }
  if (config.threads < 0 || config.max_connections == 0) {
    return Fail(ErrorCode::kInvalidArgument, "https server: bad thread or connection limits");
  }
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(config, std::move(tls), std::move(handler));
  } catch (const std::exception& e) {
    return Fail(ErrorCode::kInternal, "https server: {}", e.what());
  }
  MOAT_TRY(impl->Bind());
  return std::unique_ptr<HttpsServer>(new HttpsServer(std::move(impl)));
}

uint16_t HttpsServer::port() const { return impl_->port(); }
void HttpsServer::Start() { impl_->Start(); }
void HttpsServer::Shutdown(std::chrono::milliseconds grace) { impl_->Shutdown(grace); }
HttpsServerStats HttpsServer::stats() const { return impl_->Stats(); }

}  // namespace moat::net
