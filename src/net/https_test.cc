// Integration tests: the real HttpsServer on 127.0.0.1 port 0, driven by our HttpsClient and by
// third-party clients (the curl and openssl command-line tools), with certificates made in
// process.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/unique_fd.h"
#include "crypto/tls.h"
#include "crypto/x509.h"
#include "net/http.h"
#include "net/https_client.h"
#include "net/https_server.h"
#include "support/pki.h"
#include "support/shell.h"

namespace moat::net {
namespace {

using crypto::Certificate;
using crypto::CertificateProfile;
using crypto::PrivateKey;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

// ---- An in-process PKI ----

using test_support::Client;
using test_support::Issue;
using test_support::Issued;
using test_support::Profile;
using test_support::Root;

struct Pki {
  Issued server_root = Root("Test Service Root");
  Issued server = [this] {
    auto p = Profile(CertificateProfile::Kind::kServer, "moat-service");
    p.san_dns = {"localhost"};
    p.san_ips = {"127.0.0.1"};
    return Issue(server_root, p);
  }();
  Issued client_root = Root("Test Client Root");
  Issued tenant = Issue(client_root, Profile(CertificateProfile::Kind::kIntermediateCa, "Tenant"));
  Issued operator_cert = Client(client_root, "operator-1", {"urn:moat:operator:1"});
  Issued device = Client(tenant, "device-1", {"urn:moat:device:1"});
  Issued late_tenant =
      Issue(client_root, Profile(CertificateProfile::Kind::kIntermediateCa, "Late Tenant"));
  Issued late_device = Client(late_tenant, "device-2");
  Issued foreign_root = Root("Foreign Root");
  Issued foreign_client = Client(foreign_root, "intruder");
};

using test_support::CommandResult;
using test_support::RunShell;

// What the handler saw, for the test to inspect.
class Recorder {
 public:
  void Add(const HttpRequest& r) {
    std::lock_guard lock(mu_);
    requests_.push_back(r);
  }
  std::vector<HttpRequest> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  size_t size() const {
    std::lock_guard lock(mu_);
    return requests_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<HttpRequest> requests_;
};

class HttpsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    log::SetLevel(log::Level::kWarn);
    pki_ = new Pki();
    auto dir = TempDir::Create("moat-net-test");
    ASSERT_TRUE(dir.has_value());
    dir_ = new TempDir(std::move(*dir));
    Write("server-root.pem", pki_->server_root.cert.ToPem());
    Write("foreign-root.pem", pki_->foreign_root.cert.ToPem());
    WriteIdentity("operator", pki_->operator_cert);
    WriteIdentity("foreign", pki_->foreign_client);
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete pki_;
  }

  static void Write(const std::string& name, std::string_view text) {
    ASSERT_TRUE(AtomicWriteFile(dir_->path() / name, text).has_value()) << name;
  }
  static void WriteIdentity(const std::string& name, const Issued& identity) {
    Write(name + ".pem", identity.cert.ToPem());
    auto pem = identity.key.ToPem();
    ASSERT_TRUE(pem.has_value());
    Write(name + "-key.pem", pem->view());
  }
  static std::string File(const std::string& name) { return (dir_->path() / name).string(); }

  void TearDown() override {
    if (server_) server_->Shutdown(2s);
  }

  static crypto::TlsServerConfig DefaultTls() {
    return crypto::TlsServerConfig{.certificate = pki_->server.cert,
                                   .chain = {},
                                   .key = pki_->server.key,
                                   .client_roots = {pki_->client_root.cert},
                                   .client_intermediates = {pki_->tenant.cert}};
  }

  static HttpsServerConfig DefaultConfig() {
    HttpsServerConfig config;
    config.threads = 2;
    config.max_body_bytes = 4096;
    config.max_header_bytes = 4096;
    return config;
  }

  // A handler that records the request and answers 200 with a JSON summary of it; the path
  // "/echo" answers the body back as it came.
  Handler RecordingHandler() {
    return [this](const HttpRequest& r) {
      recorder_.Add(r);
      HttpResponse response;
      if (r.path == "/echo") {
        response.content_type = "application/octet-stream";
        response.body = r.body;
        return response;
      }
      Json summary = {{"method", r.method}, {"path", r.path}, {"query", r.query}};
      response.body = DumpJson(summary);
      return response;
    };
  }

  void StartServer(Handler handler, HttpsServerConfig config = DefaultConfig(),
                   crypto::TlsServerConfig tls = DefaultTls()) {
    auto context = crypto::TlsServerContext::Create(tls);
    ASSERT_TRUE(context.has_value()) << context.error().message();
    tls_ = *context;
    auto server = HttpsServer::Create(config, tls_, std::move(handler));
    ASSERT_TRUE(server.has_value()) << server.error().message();
    server_ = std::move(*server);
    ASSERT_NE(server_->port(), 0);
    server_->Start();
  }

  std::string BaseUrl() const { return fmt::format("https://127.0.0.1:{}", server_->port()); }

  std::unique_ptr<HttpsClient> MakeClient(const Issued* identity,
                                          std::vector<Certificate> roots = {},
                                          size_t max_response_bytes = 64 << 20) {
    HttpsClientConfig config;
    config.base_url = BaseUrl();
    config.tls.server_roots = roots.empty() ? std::vector{pki_->server_root.cert} : roots;
    if (identity != nullptr) {
      config.tls.certificate = identity->cert;
      config.tls.key = identity->key;
    }
    config.timeout = 10s;
    config.max_response_bytes = max_response_bytes;
    auto client = HttpsClient::Create(config);
    EXPECT_TRUE(client.has_value()) << client.error().message();
    return client ? std::move(*client) : nullptr;
  }

  // Waits (briefly) for a counter the server bumps on its own threads.
  void WaitForHandshakeFailures(uint64_t n) {
    for (int i = 0; i < 200 && server_->stats().handshakes_failed < n; ++i) {
      std::this_thread::sleep_for(10ms);
    }
  }

  // Sends raw bytes over TLS with `openssl s_client` (as the operator) and returns its output.
  CommandResult RawRequest(const std::string& bytes) {
    Write("raw-request", bytes);
    return RunShell(
        fmt::format("timeout 10 openssl s_client -connect 127.0.0.1:{} -CAfile {} -cert {} -key {} "
                    "-verify_return_error -ign_eof < {}",
                    server_->port(), File("server-root.pem"), File("operator.pem"),
                    File("operator-key.pem"), File("raw-request")));
  }

  static Pki* pki_;
  static TempDir* dir_;
  Recorder recorder_;
  std::shared_ptr<crypto::TlsServerContext> tls_;
  std::unique_ptr<HttpsServer> server_;
};

Pki* HttpsTest::pki_ = nullptr;
TempDir* HttpsTest::dir_ = nullptr;

// ---- Mutual TLS ----

TEST_F(HttpsTest, ClientCertificateReachesTheHandler) {
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->device);  // leaf only; the tenant CA is known to the server
  auto response = client->Send("GET", "/device/v1/ping?x=1");
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->content_type, "application/json");
  EXPECT_EQ(response->Header("cache-control"), "no-store");
  EXPECT_EQ(response->body, R"({"method":"GET","path":"/device/v1/ping","query":"x=1"})");

  ASSERT_EQ(recorder_.size(), 1u);
  const HttpRequest seen = recorder_.requests()[0];
  ASSERT_TRUE(seen.client_certificate.has_value());
  EXPECT_EQ(seen.client_certificate->SubjectCommonName(), "device-1");
  EXPECT_EQ(seen.client_certificate->SanUris(), std::vector<std::string>{"urn:moat:device:1"});
  EXPECT_EQ(seen.target, "/device/v1/ping?x=1");
  EXPECT_THAT(seen.remote_address, HasSubstr("127.0.0.1:"));
  EXPECT_EQ(seen.Header("Host"), fmt::format("127.0.0.1:{}", server_->port()));
}

TEST_F(HttpsTest, ClientWithoutCertificateCompletesTheHandshake) {
  StartServer(RecordingHandler());
  auto client = MakeClient(nullptr);
  auto response = client->Send("GET", "/healthz");
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 200);
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_FALSE(recorder_.requests()[0].client_certificate.has_value());
}

TEST_F(HttpsTest, ClientCertificateFromForeignCaFailsTheHandshake) {
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->foreign_client);
  auto response = client->Send("GET", "/healthz");
  ASSERT_FALSE(response.has_value());
  EXPECT_EQ(response.error().code(), ErrorCode::kUnauthenticated) << response.error().message();
  WaitForHandshakeFailures(1);
  EXPECT_EQ(server_->stats().handshakes_failed, 1u);
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(HttpsTest, ClientThatDoesNotTrustTheServerRefusesIt) {
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->operator_cert, {pki_->foreign_root.cert});
  auto response = client->Send("GET", "/healthz");
  ASSERT_FALSE(response.has_value());
  EXPECT_EQ(response.error().code(), ErrorCode::kVerificationFailed) << response.error().message();
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(HttpsTest, Tls12ClientsAreRefused) {
  StartServer(RecordingHandler());
  CommandResult curl = RunShell(fmt::format(
      "timeout 10 curl -sS --tls-max 1.2 --cacert {} --cert {} --key {} {}/healthz",
      File("server-root.pem"), File("operator.pem"), File("operator-key.pem"), BaseUrl()));
  EXPECT_NE(curl.status, 0) << curl.output;
  EXPECT_THAT(curl.output, Not(HasSubstr("\"path\"")));

  CommandResult s_client =
      RunShell(fmt::format("timeout 10 openssl s_client -tls1_2 -connect 127.0.0.1:{} -CAfile {} "
                           "< /dev/null",
                           server_->port(), File("server-root.pem")));
  EXPECT_NE(s_client.status, 0) << s_client.output;
  EXPECT_THAT(s_client.output, HasSubstr("alert protocol version"));
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(HttpsTest, AddClientIntermediateAdmitsItsLeavesFromTheNextHandshake) {
  StartServer(RecordingHandler());
  auto before = MakeClient(&pki_->late_device);
  auto refused = before->Send("GET", "/healthz");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnauthenticated) << refused.error().message();

  ASSERT_TRUE(tls_->AddClientIntermediate(pki_->late_tenant.cert).has_value());
  auto after = MakeClient(&pki_->late_device);
  auto response = after->Send("GET", "/healthz");
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 200);
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(recorder_.requests()[0].client_certificate->SubjectCommonName(), "device-2");
}

// ---- Third-party clients ----

TEST_F(HttpsTest, CurlCommandLineWithClientCertificate) {
  StartServer(RecordingHandler());
  CommandResult curl = RunShell(fmt::format(
      "timeout 10 curl -sS --cacert {} --cert {} --key {} -w ' %{{http_code}}' {}/api/v1/x",
      File("server-root.pem"), File("operator.pem"), File("operator-key.pem"), BaseUrl()));
  EXPECT_EQ(curl.status, 0) << curl.output;
  EXPECT_THAT(curl.output, HasSubstr("\"path\":\"/api/v1/x\""));
  EXPECT_THAT(curl.output, HasSubstr(" 200"));
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(recorder_.requests()[0].client_certificate->SubjectCommonName(), "operator-1");
}

TEST_F(HttpsTest, CurlCommandLineReusesTheConnectionForTwoRequests) {
  StartServer(RecordingHandler());
  CommandResult curl = RunShell(fmt::format(
      "timeout 10 curl -sS --cacert {} --cert {} --key {} {}/one {}/two", File("server-root.pem"),
      File("operator.pem"), File("operator-key.pem"), BaseUrl(), BaseUrl()));
  EXPECT_EQ(curl.status, 0) << curl.output;
  const auto seen = recorder_.requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].remote_address, seen[1].remote_address);
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
}

TEST_F(HttpsTest, OpenSslSClientCompletesAMutualHandshake) {
  StartServer(RecordingHandler());
  CommandResult out = RawRequest("GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(out.status, 0) << out.output;
  EXPECT_THAT(out.output, HasSubstr("TLSv1.3"));
  EXPECT_THAT(out.output, HasSubstr("Verify return code: 0 (ok)"));
  EXPECT_THAT(out.output, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(out.output, HasSubstr("Connection: close"));
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(recorder_.requests()[0].client_certificate->SubjectCommonName(), "operator-1");
}

// ---- HTTP ----

TEST_F(HttpsTest, KeepAliveServesTwoRequestsOnOneConnection) {
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->operator_cert);
  ASSERT_TRUE(client->Send("GET", "/one").has_value());
  ASSERT_TRUE(client->Send("POST", "/two", "{}").has_value());
  const auto seen = recorder_.requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].remote_address, seen[1].remote_address);
  EXPECT_EQ(seen[1].method, "POST");
  EXPECT_EQ(seen[1].Header("content-type"), "application/json");
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
  EXPECT_EQ(server_->stats().requests, 2u);
}

TEST_F(HttpsTest, HandlerReceivesTheExactBodyBytes) {
  StartServer(RecordingHandler());
  std::string body;
  for (int i = 0; i < 4096; ++i) body.push_back(static_cast<char>(i % 256));  // NULs, CRLFs...
  auto client = MakeClient(&pki_->operator_cert);
  auto response = client->Send("PUT", "/echo", body, "application/octet-stream");
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 200);
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(recorder_.requests()[0].body, body);
  EXPECT_EQ(recorder_.requests()[0].method, "PUT");
  EXPECT_EQ(response->body, body);
}

TEST_F(HttpsTest, BodyOverTheLimitIs413AndTheHandlerIsNotCalled) {
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->operator_cert);
  auto response = client->Send("POST", "/echo", std::string(4097, 'x'));
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(response->content_type, "application/problem+json");
  EXPECT_THAT(response->body, HasSubstr("\"type\":\"urn:moat:problem:payload-too-large\""));
  EXPECT_EQ(response->Header("connection"), "close");
  EXPECT_EQ(recorder_.size(), 0u);
  // The same client carries on over a new connection.
  auto next = client->Send("GET", "/after");
  ASSERT_TRUE(next.has_value()) << next.error().message();
  EXPECT_EQ(next->status, 200);
}

TEST_F(HttpsTest, ChunkedBodyOverTheLimitIs413) {
  StartServer(RecordingHandler());
  std::string request = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; ++i) request += "400\r\n" + std::string(1024, 'y') + "\r\n";
  request += "0\r\n\r\n";
  CommandResult out = RawRequest(request);
  EXPECT_THAT(out.output, HasSubstr("HTTP/1.1 413 Payload Too Large"));
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(HttpsTest, HeaderOverTheLimitIs431) {
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->operator_cert);
  auto response = client->Send("GET", "/" + std::string(5000, 'a'));
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 431);
  EXPECT_THAT(response->body, HasSubstr("request-header-fields-too-large"));
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(HttpsTest, MalformedRequestLineIs400) {
  StartServer(RecordingHandler());
  CommandResult out = RawRequest("BOGUS\r\n\r\n");
  EXPECT_THAT(out.output, HasSubstr("HTTP/1.1 400 Bad Request"));
  EXPECT_THAT(out.output, HasSubstr("Content-Type: application/problem+json"));
  EXPECT_THAT(out.output, HasSubstr("urn:moat:problem:malformed-request"));
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(HttpsTest, ContentLengthWithTransferEncodingIs400) {
  StartServer(RecordingHandler());
  CommandResult out = RawRequest(
      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\n");
  EXPECT_THAT(out.output, HasSubstr("HTTP/1.1 400 Bad Request"));
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(HttpsTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer(RecordingHandler());
  CommandResult out = RawRequest(
      "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  const auto seen = recorder_.requests();
  ASSERT_EQ(seen.size(), 2u) << out.output;
  EXPECT_EQ(seen[0].path, "/a");
  EXPECT_EQ(seen[1].path, "/b");
  EXPECT_LT(out.output.find("\"/a\""), out.output.find("\"/b\""));
}

TEST_F(HttpsTest, HeadGetsHeadersWithoutBody) {
  StartServer([](const HttpRequest&) { return HttpResponse{.body = "hello"}; });
  auto client = MakeClient(&pki_->operator_cert);
  auto response = client->Send("HEAD", "/x");
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->Header("content-length"), "5");
  EXPECT_EQ(response->body, "");
  // The connection is still in step for the next request.
  auto next = client->Send("GET", "/x");
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->body, "hello");
}

TEST_F(HttpsTest, HandlerFailuresBecome500) {
  StartServer([](const HttpRequest& r) -> HttpResponse {
    if (r.path == "/throw") throw std::runtime_error("boom");
    HttpResponse bad;
    bad.headers = {{"X-Injected", "a\r\nSet-Cookie: x"}};
    return bad;
  });
  auto client = MakeClient(&pki_->operator_cert);
  for (const char* path : {"/throw", "/bad-header"}) {
    auto response = client->Send("GET", path);
    ASSERT_TRUE(response.has_value()) << response.error().message();
    EXPECT_EQ(response->status, 500) << path;
    EXPECT_EQ(response->content_type, "application/problem+json");
    EXPECT_EQ(response->Header("set-cookie"), "");
    EXPECT_THAT(response->body, Not(HasSubstr("boom")));
  }
}

TEST_F(HttpsTest, ClientCapsTheResponseSize) {
  StartServer([](const HttpRequest&) { return HttpResponse{.body = std::string(1000, 'z')}; });
  auto client = MakeClient(&pki_->operator_cert, {}, /*max_response_bytes=*/100);
  auto response = client->Send("GET", "/big");
  ASSERT_FALSE(response.has_value());
  EXPECT_EQ(response.error().code(), ErrorCode::kLimitExceeded);
}

TEST_F(HttpsTest, ClientReadsAnEarlyAnswerToAnUploadTheServerStopsReading) {
  // 4 KiB allowed; 8 MiB sent: the server answers 413 after the header and closes while the
  // client is still writing. The caller gets the 413, not the broken pipe.
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->operator_cert);
  auto response = client->Send("POST", "/upload", std::string(8 << 20, 'u'));
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 413);
  EXPECT_THAT(response->body, HasSubstr("payload-too-large"));
  // The connection is not reused after an answer to a request it did not send whole.
  auto next = client->Send("GET", "/after");
  ASSERT_TRUE(next.has_value()) << next.error().message();
  EXPECT_EQ(next->status, 200);
}

TEST_F(HttpsTest, ClientRefusesBadMethodsAndPaths) {
  StartServer(RecordingHandler());
  auto client = MakeClient(nullptr);
  EXPECT_EQ(client->Send("get", "/x").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(client->Send("GET", "x").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(client->Send("GET", "/a b").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(client->Send("GET", "/a\r\nX: y").error().code(), ErrorCode::kInvalidArgument);
  HttpsClientConfig http;
  http.base_url = "http://127.0.0.1:1";
  http.tls.server_roots = {pki_->server_root.cert};
  EXPECT_EQ(HttpsClient::Create(http).error().code(), ErrorCode::kInvalidArgument);
}

// ---- Timeouts and limits ----

// A plain TCP connection to the server that never speaks.
UniqueFd ConnectTcp(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd.valid());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

TEST_F(HttpsTest, SilentAndIdleConnectionsAreClosedByTheirTimeouts) {
  HttpsServerConfig config = DefaultConfig();
  config.handshake_timeout = 1s;
  config.idle_timeout = 1s;
  StartServer(RecordingHandler(), config);
  UniqueFd silent = ConnectTcp(server_->port());  // never starts the TLS handshake
  auto client = MakeClient(&pki_->operator_cert);
  ASSERT_TRUE(client->Send("GET", "/once").has_value());  // then idles
  for (int i = 0; i < 300 && server_->stats().active_connections > 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(server_->stats().active_connections, 0u);
  EXPECT_EQ(server_->stats().handshakes_failed, 1u);
  char byte;
  EXPECT_EQ(::read(silent.get(), &byte, 1), 0);  // closed by the server
}

TEST_F(HttpsTest, ConnectionsOverTheLimitAreClosed) {
  HttpsServerConfig config = DefaultConfig();
  config.max_connections = 1;
  StartServer(RecordingHandler(), config);
  auto first = MakeClient(&pki_->operator_cert);
  ASSERT_TRUE(first->Send("GET", "/one").has_value());  // holds the only slot (keep-alive)
  auto second = MakeClient(&pki_->operator_cert)->Send("GET", "/two");
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), ErrorCode::kUnavailable) << second.error().message();
  EXPECT_EQ(server_->stats().connections_refused, 1u);
  EXPECT_TRUE(first->Send("GET", "/three").has_value());
}

// ---- Lifecycle ----

TEST_F(HttpsTest, GracefulShutdownFinishesTheRequestInFlight) {
  std::promise<void> entered;
  std::atomic<bool> signalled{false};
  StartServer([&](const HttpRequest& r) {
    if (r.path == "/slow" && !signalled.exchange(true)) {
      entered.set_value();
      std::this_thread::sleep_for(300ms);
    }
    return HttpResponse{.body = "{}"};
  });
  // An idle keep-alive connection must not hold the shutdown up.
  auto idle = MakeClient(&pki_->operator_cert);
  ASSERT_TRUE(idle->Send("GET", "/warm").has_value());

  auto busy = MakeClient(&pki_->operator_cert);
  auto in_flight = std::async(std::launch::async, [&] { return busy->Send("GET", "/slow"); });
  entered.get_future().wait();
  const auto start = std::chrono::steady_clock::now();
  server_->Shutdown(10s);
  const auto took = std::chrono::steady_clock::now() - start;

  auto response = in_flight.get();
  ASSERT_TRUE(response.has_value()) << response.error().message();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->Header("connection"), "close");
  // Far below the grace period: nothing waited for the idle connection.
  EXPECT_LT(took, 5s);

  auto after = MakeClient(&pki_->operator_cert)->Send("GET", "/late");
  ASSERT_FALSE(after.has_value());
  EXPECT_EQ(after.error().code(), ErrorCode::kUnavailable) << after.error().message();
  EXPECT_EQ(server_->stats().active_connections, 0u);
}

TEST_F(HttpsTest, CreateRefusesAPortInUse) {
  StartServer(RecordingHandler());
  HttpsServerConfig config = DefaultConfig();
  config.port = server_->port();
  auto second = HttpsServer::Create(config, tls_, RecordingHandler());
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), ErrorCode::kIo);
}

TEST_F(HttpsTest, DestroyingAStartedServerShutsItDown) {
  StartServer(RecordingHandler());
  auto client = MakeClient(&pki_->operator_cert);
  ASSERT_TRUE(client->Send("GET", "/x").has_value());
  server_.reset();  // with a keep-alive connection open
  auto after = client->Send("GET", "/y");
  EXPECT_FALSE(after.has_value());
}

}  // namespace
}  // namespace moat::net
