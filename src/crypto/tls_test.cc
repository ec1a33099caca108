#include "crypto/tls.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "crypto/openssl_util.h"
#include "support/pki.h"

namespace moat::crypto {
namespace {

using internal::SslCtxPtr;
using internal::SslPtr;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// ---- An in-process PKI ----

using test_support::Issue;
using test_support::Issued;
using test_support::Profile;
using test_support::Root;

struct Pki {
  Issued server_root = Root("Server Root");
  Issued server = [this] {
    auto p = Profile(CertificateProfile::Kind::kServer, "moat-service");
    p.san_dns = {"localhost"};
    p.san_ips = {"127.0.0.1"};
    return Issue(server_root, p);
  }();
  Issued client_root = Root("Client Root");
  Issued tenant = Issue(client_root, Profile(CertificateProfile::Kind::kIntermediateCa, "Tenant"));
  Issued device = [this] {
    auto p = Profile(CertificateProfile::Kind::kClient, "device-1");
    p.san_uris = {"urn:moat:device:1"};
    return Issue(tenant, p);
  }();
  Issued operator_cert = Issue(client_root, Profile(CertificateProfile::Kind::kClient, "operator"));
  Issued server_kind_client =
      Issue(client_root, Profile(CertificateProfile::Kind::kServer, "not-a-client"));
  Issued foreign_root = Root("Foreign Root");
  Issued foreign_client =
      Issue(foreign_root, Profile(CertificateProfile::Kind::kClient, "intruder"));
};

const Pki& TestPki() {
  static const Pki* pki = new Pki();
  return *pki;
}

TlsServerConfig ServerConfig() {
  const Pki& pki = TestPki();
  return TlsServerConfig{.certificate = pki.server.cert,
                         .chain = {},
                         .key = pki.server.key,
                         .client_roots = {pki.client_root.cert},
                         .client_intermediates = {pki.tenant.cert}};
}

TlsClientConfig ClientConfig(const Issued* identity, std::vector<Certificate> chain = {}) {
  TlsClientConfig config;
  config.server_roots = {TestPki().server_root.cert};
  if (identity != nullptr) {
    config.certificate = identity->cert;
    config.key = identity->key;
    config.chain = std::move(chain);
  }
  return config;
}

std::shared_ptr<TlsServerContext> ServerContext(const TlsServerConfig& config) {
  auto ctx = TlsServerContext::Create(config);
  EXPECT_TRUE(ctx.has_value()) << ctx.error().message();
  return *ctx;
}

SslCtxPtr ClientContext(const TlsClientConfig& config) {
  auto ctx = TlsClientContext::Create(config);
  EXPECT_TRUE(ctx.has_value()) << ctx.error().message();
  auto native = (*ctx)->NewNative();
  EXPECT_TRUE(native.has_value());
  return SslCtxPtr(*native);
}

// ---- An in-memory handshake between two SSL objects over a BIO pair ----

struct Connection {
  SslPtr client;
  SslPtr server;
  bool client_done = false;
  bool server_done = false;
  // Both handshakes completed and application data crossed both ways (in TLS 1.3 the client
  // finishes before the server has checked the client's certificate).
  bool established = false;
};

enum class Step { kPending, kDone, kFailed };

Step Advance(SSL* ssl) {
  const int rc = SSL_do_handshake(ssl);
  if (rc == 1) return Step::kDone;
  const int err = SSL_get_error(ssl, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Step::kPending;
  return Step::kFailed;
}

Connection Handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx, SSL_SESSION* resume = nullptr,
                     const std::string& alpn = "") {
  Connection c;
  c.client.reset(SSL_new(client_ctx));
  c.server.reset(SSL_new(server_ctx));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  EXPECT_EQ(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0), 1);
  SSL_set_bio(c.client.get(), client_bio, client_bio);
  SSL_set_bio(c.server.get(), server_bio, server_bio);
  SSL_set_connect_state(c.client.get());
  SSL_set_accept_state(c.server.get());
  if (resume != nullptr) {
    EXPECT_EQ(SSL_set_session(c.client.get(), resume), 1);
  }
  if (!alpn.empty()) {
    std::string wire(1, static_cast<char>(alpn.size()));
    wire += alpn;
    EXPECT_EQ(
        SSL_set_alpn_protos(c.client.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size())),
        0);
  }
  Step client = Step::kPending;
  Step server = Step::kPending;
  for (int i = 0; i < 50 && (client == Step::kPending || server == Step::kPending); ++i) {
    if (client == Step::kPending) client = Advance(c.client.get());
    if (server == Step::kPending) server = Advance(c.server.get());
  }
  c.client_done = client == Step::kDone;
  c.server_done = server == Step::kDone;
  if (c.client_done && c.server_done) {
    char buf[16];
    const bool s2c =
        SSL_write(c.server.get(), "ping", 4) == 4 && SSL_read(c.client.get(), buf, sizeof buf) == 4;
    const bool c2s =
        SSL_write(c.client.get(), "pong", 4) == 4 && SSL_read(c.server.get(), buf, sizeof buf) == 4;
    c.established = s2c && c2s;
  }
  ERR_clear_error();
  return c;
}

// ---- Tests ----

TEST(TlsTest, MutualHandshakeGivesEachSideThePeersCertificate) {
  auto server = ServerContext(ServerConfig());
  auto client = ClientContext(ClientConfig(&TestPki().operator_cert));
  Connection c = Handshake(server->native(), client.get());
  ASSERT_TRUE(c.established);

  auto seen_by_server = PeerCertificate(c.server.get());
  ASSERT_TRUE(seen_by_server.has_value()) << seen_by_server.error().message();
  EXPECT_EQ(seen_by_server->SubjectCommonName(), "operator");
  auto seen_by_client = PeerCertificate(c.client.get());
  ASSERT_TRUE(seen_by_client.has_value());
  EXPECT_EQ(seen_by_client->SubjectCommonName(), "moat-service");

  EXPECT_EQ(SSL_version(c.server.get()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_get_negotiated_group(c.server.get()), NID_X9_62_prime256v1);
}

TEST(TlsTest, ClientWithoutCertificateCompletesHandshakeInRequestMode) {
  auto server = ServerContext(ServerConfig());
  auto client = ClientContext(ClientConfig(nullptr));
  Connection c = Handshake(server->native(), client.get());
  ASSERT_TRUE(c.established);
  auto peer = PeerCertificate(c.server.get());
  ASSERT_FALSE(peer.has_value());
  EXPECT_EQ(peer.error().code(), ErrorCode::kNotFound);
}

TEST(TlsTest, ClientWithoutCertificateFailsInRequireMode) {
  TlsServerConfig config = ServerConfig();
  config.client_certificates = ClientCertificateMode::kRequire;
  auto server = ServerContext(config);
  auto client = ClientContext(ClientConfig(nullptr));
  Connection c = Handshake(server->native(), client.get());
  EXPECT_FALSE(c.server_done);
  EXPECT_FALSE(c.established);
}

TEST(TlsTest, ClientCertificateFromForeignCaFailsTheHandshake) {
  auto server = ServerContext(ServerConfig());
  auto client = ClientContext(ClientConfig(&TestPki().foreign_client));
  Connection c = Handshake(server->native(), client.get());
  EXPECT_FALSE(c.server_done);
  EXPECT_FALSE(c.established);
}

TEST(TlsTest, ClientRefusesServerItDoesNotTrust) {
  auto server = ServerContext(ServerConfig());
  TlsClientConfig config = ClientConfig(&TestPki().operator_cert);
  config.server_roots = {TestPki().foreign_root.cert};
  auto client = ClientContext(config);
  Connection c = Handshake(server->native(), client.get());
  EXPECT_FALSE(c.client_done);
  EXPECT_FALSE(c.established);
}

TEST(TlsTest, ClientTrustsOnlyServerRootsWhateverTheStoreHolds) {
  auto server = ServerContext(ServerConfig());
  // As if the library that made the SSL_CTX had loaded more CAs into its store after Configure.
  TlsClientConfig config = ClientConfig(nullptr);
  config.server_roots = {TestPki().foreign_root.cert};
  SslCtxPtr client = ClientContext(config);
  ASSERT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(client.get()),
                                TestPki().server_root.cert.native()),
            1);
  EXPECT_FALSE(Handshake(server->native(), client.get()).client_done);
  // And the other way round: a store that lost the roots does not matter either.
  SslCtxPtr trusting = ClientContext(ClientConfig(nullptr));
  X509_STORE* empty = X509_STORE_new();
  ASSERT_NE(empty, nullptr);
  SSL_CTX_set_cert_store(trusting.get(), empty);
  EXPECT_TRUE(Handshake(server->native(), trusting.get()).established);
}

TEST(TlsTest, ConfigureTwiceOnOneContextIsFine) {
  auto context = TlsClientContext::Create(ClientConfig(&TestPki().operator_cert));
  ASSERT_TRUE(context.has_value());
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  ASSERT_TRUE((*context)->Configure(ctx.get()).has_value());
  ASSERT_TRUE((*context)->Configure(ctx.get()).has_value());
  context->reset();  // the SSL_CTX keeps what it needs
  auto server = ServerContext(ServerConfig());
  EXPECT_TRUE(Handshake(server->native(), ctx.get()).established);
}

TEST(TlsTest, Tls12ClientIsRefused) {
  auto server = ServerContext(ServerConfig());
  SslCtxPtr client(SSL_CTX_new(TLS_client_method()));
  ASSERT_TRUE(client);
  ASSERT_EQ(SSL_CTX_set_max_proto_version(client.get(), TLS1_2_VERSION), 1);
  SSL_CTX_set_verify(client.get(), SSL_VERIFY_NONE, nullptr);
  Connection c = Handshake(server->native(), client.get());
  EXPECT_FALSE(c.server_done);
  EXPECT_FALSE(c.client_done);
}

TEST(TlsTest, ClientCertificateWithoutClientAuthUsageIsRefused) {
  auto server = ServerContext(ServerConfig());
  auto client = ClientContext(ClientConfig(&TestPki().server_kind_client));
  EXPECT_FALSE(Handshake(server->native(), client.get()).established);
}

TEST(TlsTest, AcceptedClientUsagesAreConfigurable) {
  auto client = ClientContext(ClientConfig(&TestPki().server_kind_client));
  // Another accepted usage (the hook for Moat's update-certificate usage).
  TlsServerConfig config = ServerConfig();
  config.client_usages = {ExtendedKeyUsage::kClientAuth, ExtendedKeyUsage::kServerAuth};
  EXPECT_TRUE(Handshake(ServerContext(config)->native(), client.get()).established);
  // No usage check in TLS at all: the application must check.
  config.client_usages = {};
  EXPECT_TRUE(Handshake(ServerContext(config)->native(), client.get()).established);
  // Only code signing: a clientAuth certificate no longer passes.
  config.client_usages = {ExtendedKeyUsage::kCodeSigning};
  auto operator_client = ClientContext(ClientConfig(&TestPki().operator_cert));
  EXPECT_FALSE(Handshake(ServerContext(config)->native(), operator_client.get()).established);
}

// A device's bootstrap credential: self-signed over its identity key, SAN naming that key.
Issued SelfCertifiedDevice() {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  auto now = std::chrono::system_clock::now();
  auto cert = SelfCertifiedDeviceCertificate(*key, now - 1h, now + 1h);
  EXPECT_TRUE(cert.has_value()) << cert.error().message();
  return Issued{*key, *cert};
}

TEST(TlsTest, SelfCertifiedDeviceIdentityIsAcceptedOnlyWhenEnabled) {
  Issued device = SelfCertifiedDevice();
  auto client = ClientContext(ClientConfig(&device));
  TlsServerConfig config = ServerConfig();
  EXPECT_FALSE(Handshake(ServerContext(config)->native(), client.get()).established);

  config.accept_device_identity_certificates = true;
  Connection c = Handshake(ServerContext(config)->native(), client.get());
  ASSERT_TRUE(c.established);
  auto peer = PeerCertificate(c.server.get());
  ASSERT_TRUE(peer.has_value()) << peer.error().message();
  EXPECT_EQ(*peer, device.cert);
  EXPECT_TRUE(IsSelfCertifiedDeviceCertificate(*peer));
}

TEST(TlsTest, SelfCertifiedDeviceIdentityMayCarryAnyDates) {
  // The device's clock may be wrong before it has ever talked to the service.
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  auto now = std::chrono::system_clock::now();
  TlsServerConfig config = ServerConfig();
  config.accept_device_identity_certificates = true;
  auto server = ServerContext(config);
  for (auto [from, to] : {std::pair{now - 48h, now - 24h}, std::pair{now + 24h, now + 48h}}) {
    auto cert = SelfCertifiedDeviceCertificate(*key, from, to);
    ASSERT_TRUE(cert.has_value());
    Issued device{*key, *cert};
    auto client = ClientContext(ClientConfig(&device));
    EXPECT_TRUE(Handshake(server->native(), client.get()).established);
  }
}

TEST(TlsTest, OtherSelfSignedClientCertificatesStayRefused) {
  TlsServerConfig config = ServerConfig();
  config.accept_device_identity_certificates = true;
  auto server = ServerContext(config);
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  // (A device SAN naming another key's fingerprint passes TLS: a TPM device's ID is not its
  // key's. moat-service checks the key against its registry: DeviceApi, CheckIdentityCredential,
  // tested in service_tpm_attestation_test.)
  // No device SAN at all.
  auto plain = SelfSignCertificate(Profile(CertificateProfile::Kind::kClient, "plain"), *key);
  ASSERT_TRUE(plain.has_value());
  // A self-signed CA.
  Issued root = Root("Some Root");
  for (const Issued& who : {Issued{*key, *plain}, root}) {
    auto client = ClientContext(ClientConfig(&who));
    EXPECT_FALSE(Handshake(server->native(), client.get()).established) << who.cert.Subject();
  }
}

TEST(TlsTest, UpdateCertificateNeedsItsUsageListed) {
  auto p = Profile(CertificateProfile::Kind::kDeviceUpdate, "device-update");
  p.san_uris = {"urn:moat:device:2"};
  Issued update = Issue(TestPki().tenant, p);
  auto client = ClientContext(ClientConfig(&update));
  TlsServerConfig config = ServerConfig();
  EXPECT_FALSE(Handshake(ServerContext(config)->native(), client.get()).established);
  config.client_usages = {ExtendedKeyUsage::kClientAuth, ExtendedKeyUsage::kMoatDeviceUpdate};
  Connection c = Handshake(ServerContext(config)->native(), client.get());
  ASSERT_TRUE(c.established);
  auto peer = PeerCertificate(c.server.get());
  ASSERT_TRUE(peer.has_value());
  EXPECT_TRUE(peer->HasExtendedKeyUsage(ExtendedKeyUsage::kMoatDeviceUpdate));
  EXPECT_FALSE(peer->HasExtendedKeyUsage(ExtendedKeyUsage::kClientAuth));
  // A clientAuth certificate still passes that server; an update certificate never passes one
  // that accepts only clientAuth (as any third-party TLS server does).
  auto operator_client = ClientContext(ClientConfig(&TestPki().operator_cert));
  EXPECT_TRUE(Handshake(ServerContext(config)->native(), operator_client.get()).established);
}

TEST(TlsTest, LeafFromKnownIntermediateNeedsNoChain) {
  auto server = ServerContext(ServerConfig());
  auto client = ClientContext(ClientConfig(&TestPki().device));
  Connection c = Handshake(server->native(), client.get());
  ASSERT_TRUE(c.established);
  auto peer = PeerCertificate(c.server.get());
  ASSERT_TRUE(peer.has_value());
  EXPECT_EQ(peer->SanUris(), std::vector<std::string>{"urn:moat:device:1"});
}

TEST(TlsTest, AddClientIntermediateTakesEffectForNewHandshakes) {
  TlsServerConfig config = ServerConfig();
  config.client_intermediates.clear();
  auto server = ServerContext(config);
  auto leaf_only = ClientContext(ClientConfig(&TestPki().device));
  EXPECT_FALSE(Handshake(server->native(), leaf_only.get()).established);
  // A client that sends the intermediate itself is fine all along.
  auto with_chain = ClientContext(ClientConfig(&TestPki().device, {TestPki().tenant.cert}));
  EXPECT_TRUE(Handshake(server->native(), with_chain.get()).established);

  ASSERT_TRUE(server->AddClientIntermediate(TestPki().tenant.cert).has_value());
  EXPECT_TRUE(Handshake(server->native(), leaf_only.get()).established);
  // Adding it again is harmless.
  EXPECT_TRUE(server->AddClientIntermediate(TestPki().tenant.cert).has_value());
}

TEST(TlsTest, AddClientIntermediateRefusesNonCaAndForeignCa) {
  auto server = ServerContext(ServerConfig());
  auto leaf = server->AddClientIntermediate(TestPki().operator_cert.cert);
  ASSERT_FALSE(leaf.has_value());
  EXPECT_EQ(leaf.error().code(), ErrorCode::kInvalidArgument);
  auto foreign = server->AddClientIntermediate(TestPki().foreign_root.cert);
  ASSERT_FALSE(foreign.has_value());
  EXPECT_EQ(foreign.error().code(), ErrorCode::kVerificationFailed);
}

TEST(TlsTest, CreateRefusesBadConfigurations) {
  TlsServerConfig mismatched = ServerConfig();
  mismatched.key = TestPki().operator_cert.key;
  auto a = TlsServerContext::Create(mismatched);
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(a.error().message(), HasSubstr("does not match"));

  TlsServerConfig no_roots = ServerConfig();
  no_roots.client_roots.clear();
  EXPECT_EQ(TlsServerContext::Create(no_roots).error().code(), ErrorCode::kInvalidArgument);

  TlsServerConfig client_cert_as_server = ServerConfig();
  client_cert_as_server.certificate = TestPki().operator_cert.cert;
  client_cert_as_server.key = TestPki().operator_cert.key;
  EXPECT_THAT(TlsServerContext::Create(client_cert_as_server).error().message(),
              HasSubstr("serverAuth"));

  TlsServerConfig foreign_intermediate = ServerConfig();
  foreign_intermediate.client_intermediates = {TestPki().foreign_root.cert};
  EXPECT_EQ(TlsServerContext::Create(foreign_intermediate).error().code(),
            ErrorCode::kVerificationFailed);

  TlsClientConfig no_key = ClientConfig(&TestPki().operator_cert);
  no_key.key.reset();
  EXPECT_EQ(TlsClientContext::Create(no_key).error().code(), ErrorCode::kInvalidArgument);
  TlsClientConfig wrong_key = ClientConfig(&TestPki().operator_cert);
  wrong_key.key = TestPki().device.key;
  EXPECT_EQ(TlsClientContext::Create(wrong_key).error().code(), ErrorCode::kInvalidArgument);
  TlsClientConfig no_server_roots = ClientConfig(nullptr);
  no_server_roots.server_roots.clear();
  EXPECT_EQ(TlsClientContext::Create(no_server_roots).error().code(), ErrorCode::kInvalidArgument);
}

TEST(TlsTest, ServerNameIsCheckedAgainstTheServerCertificate) {
  auto server = ServerContext(ServerConfig());
  for (const char* good : {"localhost", "127.0.0.1"}) {
    TlsClientConfig config = ClientConfig(nullptr);
    config.server_name = good;
    auto client = ClientContext(config);
    EXPECT_TRUE(Handshake(server->native(), client.get()).established) << good;
  }
  for (const char* bad : {"other.example", "127.0.0.2"}) {
    TlsClientConfig config = ClientConfig(nullptr);
    config.server_name = bad;
    auto client = ClientContext(config);
    EXPECT_FALSE(Handshake(server->native(), client.get()).client_done) << bad;
  }
}

TEST(TlsTest, AlpnOffersMustIncludeHttp11) {
  auto server = ServerContext(ServerConfig());
  auto client = ClientContext(ClientConfig(nullptr));
  Connection http11 = Handshake(server->native(), client.get(), nullptr, "http/1.1");
  ASSERT_TRUE(http11.established);
  const unsigned char* selected = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(http11.server.get(), &selected, &len);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(selected), len), "http/1.1");
  EXPECT_FALSE(Handshake(server->native(), client.get(), nullptr, "h2").established);
}

TEST(TlsTest, ResumedSessionKeepsTheClientIdentity) {
  auto server = ServerContext(ServerConfig());
  auto client = ClientContext(ClientConfig(&TestPki().operator_cert));
  Connection first = Handshake(server->native(), client.get());
  ASSERT_TRUE(first.established);
  SSL_SESSION* session = SSL_get1_session(first.client.get());
  ASSERT_NE(session, nullptr);
  Connection second = Handshake(server->native(), client.get(), session);
  SSL_SESSION_free(session);
  ASSERT_TRUE(second.established);
  EXPECT_EQ(SSL_session_reused(second.server.get()), 1);
  auto peer = PeerCertificate(second.server.get());
  ASSERT_TRUE(peer.has_value()) << peer.error().message();
  EXPECT_EQ(peer->SubjectCommonName(), "operator");
}

TEST(TlsTest, AcquiredNativeContextOutlivesTheObject) {
  SSL_CTX* native = nullptr;
  {
    auto server = ServerContext(ServerConfig());
    native = server->AcquireNative();
  }
  auto client = ClientContext(ClientConfig(&TestPki().operator_cert));
  EXPECT_TRUE(Handshake(native, client.get()).established);
  SSL_CTX_free(native);
}

// ---- TlsConnection: blocking connections over a real socket pair ----

struct SocketPair {
  UniqueFd client, server;
};
SocketPair MakeSocketPair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// TlsConnection's contract: a process using it ignores SIGPIPE (a write to a closed peer is
// then an error, not the end of the test binary).
class TlsConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override { ::signal(SIGPIPE, SIG_IGN); }
};

TEST_F(TlsConnectionTest, ClientKeyedBySignerTalksToARequiringServer) {
  TlsServerConfig server_config = ServerConfig();
  server_config.client_certificates = ClientCertificateMode::kRequire;
  auto server_ctx = ServerContext(server_config);
  // The device's key is "elsewhere": every handshake signature goes through the signer.
  const Issued& device = TestPki().device;
  std::atomic<int> signatures = 0;
  auto key = PrivateKey::FromSigner(device.key.public_key(), [&](const Sha256Digest& d) {
    ++signatures;
    return device.key.SignDigest(d);
  });
  ASSERT_TRUE(key) << key.error().message();
  TlsClientConfig client_config = ClientConfig(nullptr);
  client_config.certificate = device.cert;
  client_config.chain = {TestPki().tenant.cert};
  client_config.key = *key;
  client_config.server_name = "127.0.0.1";
  auto client_ctx = TlsClientContext::Create(client_config);
  ASSERT_TRUE(client_ctx) << client_ctx.error().message();

  SocketPair pair = MakeSocketPair();
  std::string server_got, server_error, peer_cn;
  std::thread server([&] {
    auto c = TlsConnection::Accept(*server_ctx, std::move(pair.server), 10s);
    if (!c) {
      server_error = c.error().message();
      return;
    }
    if (auto peer = (*c)->Peer()) peer_cn = peer->SubjectCommonName();
    uint8_t buf[64];
    auto n = (*c)->Read(buf, 10s);
    if (n && *n) server_got.assign(reinterpret_cast<char*>(buf), **n);
    (void)(*c)->Write(Bytes("pong"), 10s);
  });
  auto c = TlsConnection::Connect(**client_ctx, std::move(pair.client), 10s);
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_TRUE((*c)->Write(Bytes("ping"), 10s));
  uint8_t buf[64];
  auto n = (*c)->Read(buf, 10s);
  ASSERT_TRUE(n) << n.error().message();
  ASSERT_TRUE(n->has_value());
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf), **n), "pong");
  // The server closes after its answer: a clean end reads 0.
  server.join();
  auto end = (*c)->Read(buf, 10s);
  ASSERT_TRUE(end) << end.error().message();
  EXPECT_EQ(end->value_or(99), 0u);
  EXPECT_EQ(server_error, "");
  EXPECT_EQ(server_got, "ping");
  EXPECT_EQ(peer_cn, "device-1");
  EXPECT_EQ(signatures, 1) << "one CertificateVerify";
  auto peer = (*c)->Peer();
  ASSERT_TRUE(peer);
  EXPECT_EQ(peer->SubjectCommonName(), "moat-service");
}

TEST_F(TlsConnectionTest, ReadTimesOutAndAnUntrustedServerOrAWrongNameIsRefused) {
  auto server_ctx = ServerContext(ServerConfig());
  for (const std::string name : {"127.0.0.1", "10.0.0.9"}) {
    SocketPair pair = MakeSocketPair();
    std::thread server([&] {
      auto c = TlsConnection::Accept(*server_ctx, std::move(pair.server), 10s);
      if (!c) return;
      uint8_t buf[8];
      (void)(*c)->Read(buf, 2s);  // until the client closes
    });
    TlsClientConfig config = ClientConfig(nullptr);
    config.server_name = name;
    auto ctx = TlsClientContext::Create(config);
    ASSERT_TRUE(ctx);
    auto c = TlsConnection::Connect(**ctx, std::move(pair.client), 10s);
    if (name == "127.0.0.1") {
      ASSERT_TRUE(c) << c.error().message();
      uint8_t buf[8];
      auto n = (*c)->Read(buf, 50ms);
      ASSERT_TRUE(n) << n.error().message();
      EXPECT_FALSE(n->has_value()) << "nothing came: a timeout, not an error";
    } else {
      ASSERT_FALSE(c);
      EXPECT_EQ(c.error().code(), ErrorCode::kVerificationFailed);
      EXPECT_THAT(c.error().message(), HasSubstr("IP address mismatch"));
    }
    c = Fail(ErrorCode::kInternal, "closed");  // closes the client's end
    server.join();
  }
  // A server whose root the client does not trust.
  SocketPair pair = MakeSocketPair();
  std::thread server(
      [&] { (void)TlsConnection::Accept(*server_ctx, std::move(pair.server), 10s); });
  TlsClientConfig config = ClientConfig(nullptr);
  config.server_roots = {TestPki().foreign_root.cert};
  auto ctx = TlsClientContext::Create(config);
  ASSERT_TRUE(ctx);
  auto c = TlsConnection::Connect(**ctx, std::move(pair.client), 10s);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_THAT(c.error().message(), HasSubstr("peer certificate"));
  server.join();
}

}  // namespace
}  // namespace moat::crypto
