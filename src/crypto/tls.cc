#include "crypto/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <span>

#include "crypto/openssl_util.h"

namespace moat::crypto {

using internal::OpenSslError;
using internal::SslCtxPtr;
using internal::X509StackPtr;
using internal::X509StorePtr;

namespace {

// P-256 first: the curve of every Moat key, and the one a TPM or FIPS module offers.
constexpr const char* kGroups = "P-256:X25519";
// Handshake signatures: Moat keys are ECDSA P-256 (SHA-256) or Ed25519.
constexpr const char* kSignatureAlgorithms = "ECDSA+SHA256:ed25519";
// Resumed sessions are only accepted by contexts with the same ID context.
constexpr unsigned char kSessionIdContext[] = "moat-mtls";
// Root -> tenant CA -> device is depth 2; leave room for one more level.
constexpr int kMaxVerifyDepth = 4;

// What a server context's callbacks need; owned by the SSL_CTX through its ex_data, so it lives
// exactly as long as the SSL_CTX (which a TLS stream library may hold longer than we do).
struct ServerPolicy {
  std::vector<ExtendedKeyUsage> client_usages;
  bool accept_device_identity = false;
  std::string alpn_wire;  // ALPN protocol list in wire format (length-prefixed)
};

void FreeServerPolicy(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/,
                      long /*argl*/, void* /*argp*/) {
  delete static_cast<ServerPolicy*>(ptr);
}

// Index 0 is OpenSSL's "app data", which Boost.Asio uses for its own callbacks; ours is separate.
int ServerPolicyIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeServerPolicy);
  return index;
}

// A Certificate sharing `x` (the caller keeps its own reference), which the handshake decoded.
Result<Certificate> CertificateFromX509(X509* x) { return Certificate::FromNative(x); }

// True if `cert` has an extendedKeyUsage extension listing one of `usages`. A certificate without
// the extension answers false: Moat states the usage of everything it issues.
bool HasAnyUsage(X509* cert, std::span<const ExtendedKeyUsage> usages) {
  return std::any_of(usages.begin(), usages.end(), [cert](ExtendedKeyUsage u) {
    return internal::CertificateHasUsage(cert, static_cast<int>(u));
  });
}

// Called by OpenSSL for each certificate of a client's chain once the chain verified (and on each
// error). Adds the explicit usage check on the leaf.
int ServerVerifyCallback(int preverify_ok, X509_STORE_CTX* store_ctx) {
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl == nullptr) return 0;
  const auto* policy = static_cast<const ServerPolicy*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ServerPolicyIndex()));
  // SECURITY: no policy means a context we did not configure; refuse rather than guess.
  if (policy == nullptr) return 0;
  if (preverify_ok != 1) {
    // A device's bootstrap credential is self-signed by design; it is accepted only when it is
    // exactly that (IsSelfCertifiedDeviceCertificate) and the context allows it. Its dates are
    // the device's own claim and prove nothing, so they are not held against it either.
    const int err = X509_STORE_CTX_get_error(store_ctx);
    const bool bootstrap_error = err == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
                                 err == X509_V_ERR_CERT_NOT_YET_VALID ||
                                 err == X509_V_ERR_CERT_HAS_EXPIRED;
    if (!policy->accept_device_identity || !bootstrap_error ||
        X509_STORE_CTX_get_error_depth(store_ctx) != 0 ||
        sk_X509_num(X509_STORE_CTX_get0_chain(store_ctx)) != 1) {
      return 0;
    }
    X509* leaf = X509_STORE_CTX_get_current_cert(store_ctx);
    if (leaf == nullptr) return 0;
    auto cert = CertificateFromX509(leaf);
    if (!cert || !IsSelfCertifiedDeviceCertificate(*cert)) return 0;
    X509_STORE_CTX_set_error(store_ctx, X509_V_OK);
    return 1;
  }
  if (X509_STORE_CTX_get_error_depth(store_ctx) != 0) return 1;
  if (policy->client_usages.empty()) return 1;  // the application checks usage (documented)
  X509* leaf = X509_STORE_CTX_get_current_cert(store_ctx);
  if (leaf != nullptr && HasAnyUsage(leaf, policy->client_usages)) return 1;
  X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_INVALID_PURPOSE);
  return 0;
}

// What a configured client SSL_CTX's callbacks need, owned by that SSL_CTX (which libcurl creates
// and frees per connection).
struct ClientPolicy {
  STACK_OF(X509) * roots;  // owned: the certificates and the stack
  ~ClientPolicy() { sk_X509_pop_free(roots, X509_free); }
};

void FreeClientPolicy(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/,
                      long /*argl*/, void* /*argp*/) {
  delete static_cast<ClientPolicy*>(ptr);
}

int ClientPolicyIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeClientPolicy);
  return index;
}

// Replaces X509_verify_cert's trust source for a client connection.
int ClientCertVerify(X509_STORE_CTX* store_ctx, void* /*arg*/) {
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl == nullptr) return 0;
  const auto* policy = static_cast<const ClientPolicy*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ClientPolicyIndex()));
  if (policy == nullptr) return 0;
  // SECURITY: trust exactly server_roots, whatever the SSL_CTX's X509_STORE holds: a library
  // that made the SSL_CTX (libcurl) may load the system CA bundle into it, before or after
  // Configure.
  X509_STORE_CTX_set0_trusted_stack(store_ctx, policy->roots);
  return X509_verify_cert(store_ctx);
}

// The client's counterpart: the server's leaf must state serverAuth.
int ClientVerifyCallback(int preverify_ok, X509_STORE_CTX* store_ctx) {
  if (preverify_ok != 1) return 0;
  if (X509_STORE_CTX_get_error_depth(store_ctx) != 0) return 1;
  static constexpr ExtendedKeyUsage kServer[] = {ExtendedKeyUsage::kServerAuth};
  X509* leaf = X509_STORE_CTX_get_current_cert(store_ctx);
  if (leaf != nullptr && HasAnyUsage(leaf, kServer)) return 1;
  X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_INVALID_PURPOSE);
  return 0;
}

int AlpnSelect(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void* /*arg*/) {
  const auto* policy = static_cast<const ServerPolicy*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ServerPolicyIndex()));
  if (policy == nullptr || policy->alpn_wire.empty()) return SSL_TLSEXT_ERR_NOACK;
  unsigned char* selected = nullptr;
  // SSL_select_next_proto only reads the server list, despite the non-const parameter.
  auto* server = reinterpret_cast<unsigned char*>(const_cast<char*>(policy->alpn_wire.data()));
  if (SSL_select_next_proto(&selected, outlen, server,
                            static_cast<unsigned int>(policy->alpn_wire.size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    // SECURITY: the client speaks none of our protocols; refuse (no_application_protocol).
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

Result<std::string> AlpnWire(std::span<const std::string> protocols) {
  std::string wire;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255) {
      return Fail(ErrorCode::kInvalidArgument, "TLS: ALPN protocol name '{}' must be 1-255 bytes",
                  p);
    }
    wire.push_back(static_cast<char>(p.size()));
    wire += p;
  }
  return wire;
}

// Settings shared by both sides: TLS 1.3 only, our groups and signature algorithms, strict X.509.
Result<void> ConfigureCommon(SSL_CTX* ctx) {
  // SECURITY: TLS 1.3 only. Older versions are refused during the handshake.
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: setting the protocol version"));
  }
  // TLS 1.3 has no renegotiation; the option also covers any older version that slipped in.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  if (SSL_CTX_set1_groups_list(ctx, kGroups) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: setting groups"));
  }
  if (SSL_CTX_set1_sigalgs_list(ctx, kSignatureAlgorithms) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: setting signature algorithms"));
  }
  // SECURITY: our own chain is exactly what was configured; never built from the trust store
  // (which on a server holds client roots and tenant CAs).
  SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
  if (SSL_CTX_set_max_early_data(ctx, 0) != 1) {  // no 0-RTT: it could be replayed
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: disabling early data"));
  }
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
  // SECURITY: never X509_V_FLAG_PARTIAL_CHAIN: intermediates in the store are issuers, and a
  // chain must end at a configured root.
  if (X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: setting verification flags"));
  }
  SSL_CTX_set_verify_depth(ctx, kMaxVerifyDepth);
  return Ok();
}

// Installs our certificate, chain and key; checks that they match.
Result<void> UseCredentials(SSL_CTX* ctx, const Certificate& certificate,
                            std::span<const Certificate> chain, const PrivateKey& key) {
  if (SSL_CTX_use_certificate(ctx, certificate.native()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "TLS: using the certificate"));
  }
  if (SSL_CTX_clear_chain_certs(ctx) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: clearing the chain"));
  }
  for (const Certificate& cert : chain) {
    if (SSL_CTX_add1_chain_cert(ctx, cert.native()) != 1) {
      return Fail(OpenSslError(ErrorCode::kInvalidArgument, "TLS: adding a chain certificate"));
    }
  }
  // The EVP_PKEY is shared (up-referenced), never serialised: a provider-held key works.
  if (SSL_CTX_use_PrivateKey(ctx, key.native()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "TLS: using the private key"));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                             "TLS: the private key does not match the certificate"));
  }
  return Ok();
}

Result<void> AddToStore(X509_STORE* store, const Certificate& cert) {
  // Adding a certificate that is already there succeeds (OpenSSL 3).
  if (X509_STORE_add_cert(store, cert.native()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: X509_STORE_add_cert"));
  }
  return Ok();
}

bool IsIpAddress(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

}  // namespace

// ---- TlsServerContext ----

TlsServerContext::TlsServerContext(SSL_CTX* ctx, std::vector<Certificate> roots,
                                   std::vector<Certificate> intermediates)
    : ctx_(ctx), roots_(std::move(roots)), intermediates_(std::move(intermediates)) {}

TlsServerContext::~TlsServerContext() { SSL_CTX_free(ctx_); }

SSL_CTX* TlsServerContext::AcquireNative() const {
  // Cannot fail for a valid object (it only increments a counter).
  SSL_CTX_up_ref(ctx_);
  return ctx_;
}

Result<std::shared_ptr<TlsServerContext>> TlsServerContext::Create(const TlsServerConfig& config) {
  if (config.client_roots.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "TLS server: no client roots given");
  }
  if (!config.certificate.HasExtendedKeyUsage(ExtendedKeyUsage::kServerAuth)) {
    return Fail(ErrorCode::kInvalidArgument,
                "TLS server: certificate {} has no extendedKeyUsage serverAuth",
                config.certificate.Subject());
  }
  if (!(config.certificate.public_key() == config.key.public_key())) {
    return Fail(ErrorCode::kInvalidArgument,
                "TLS server: the private key does not match certificate {}",
                config.certificate.Subject());
  }
  for (const Certificate& root : config.client_roots) {
    if (!root.IsCa()) {
      return Fail(ErrorCode::kInvalidArgument, "TLS server: client root {} is not a CA",
                  root.Subject());
    }
  }
  const int policy_index = ServerPolicyIndex();
  if (policy_index < 0) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: SSL_CTX_get_ex_new_index"));
  }
  MOAT_ASSIGN_OR_RETURN(std::string alpn_wire, AlpnWire(config.alpn_protocols));

  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: SSL_CTX_new"));
  auto policy = std::make_unique<ServerPolicy>();
  policy->client_usages = config.client_usages;
  policy->accept_device_identity = config.accept_device_identity_certificates;
  policy->alpn_wire = std::move(alpn_wire);
  if (SSL_CTX_set_ex_data(ctx.get(), policy_index, policy.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: SSL_CTX_set_ex_data"));
  }
  policy.release();  // now owned by the SSL_CTX (FreeServerPolicy)

  MOAT_TRY(ConfigureCommon(ctx.get()));
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE);
  MOAT_TRY(UseCredentials(ctx.get(), config.certificate, config.chain, config.key));

  // SECURITY: the client trust store holds only client_roots (anchors) and the known
  // intermediates (issuers); the system store is never loaded.
  X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
  if (store == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: SSL_CTX_get_cert_store"));
  }
  for (const Certificate& root : config.client_roots) {
    MOAT_TRY(AddToStore(store, root));
    // Named in the CertificateRequest, so a client with several certificates can pick.
    if (SSL_CTX_add_client_CA(ctx.get(), root.native()) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: SSL_CTX_add_client_CA"));
    }
  }
  std::vector<Certificate> intermediates;
  for (const Certificate& intermediate : config.client_intermediates) {
    if (!intermediate.IsCa()) {
      return Fail(ErrorCode::kInvalidArgument, "TLS server: client intermediate {} is not a CA",
                  intermediate.Subject());
    }
    auto chained = VerifyCertificateChain(intermediate, config.client_intermediates,
                                          config.client_roots, std::chrono::system_clock::now());
    if (!chained) return Fail(chained.error().WithContext("TLS server: client intermediate"));
    MOAT_TRY(AddToStore(store, intermediate));
    intermediates.push_back(intermediate);
  }

  // OpenSSL's SSL client purpose check (which also checks the CAs' stated usages) fits when
  // clientAuth is the only accepted usage; any other set is checked by ServerVerifyCallback alone.
  const bool client_auth_only =
      config.client_usages.size() == 1 && config.client_usages[0] == ExtendedKeyUsage::kClientAuth;
  if (SSL_CTX_set_purpose(ctx.get(),
                          client_auth_only ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_ANY) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: SSL_CTX_set_purpose"));
  }
  int mode = SSL_VERIFY_PEER;
  if (config.client_certificates == ClientCertificateMode::kRequire) {
    mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  }
  SSL_CTX_set_verify(ctx.get(), mode, ServerVerifyCallback);
  if (SSL_CTX_set_session_id_context(ctx.get(), kSessionIdContext, sizeof kSessionIdContext - 1) !=
      1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: set_session_id_context"));
  }
  SSL_CTX_set_alpn_select_cb(ctx.get(), AlpnSelect, nullptr);

  return std::shared_ptr<TlsServerContext>(
      new TlsServerContext(ctx.release(), config.client_roots, std::move(intermediates)));
}

Result<void> TlsServerContext::AddClientIntermediate(const Certificate& intermediate) {
  if (!intermediate.IsCa()) {
    return Fail(ErrorCode::kInvalidArgument, "TLS server: client intermediate {} is not a CA",
                intermediate.Subject());
  }
  std::lock_guard lock(mu_);
  if (std::find(intermediates_.begin(), intermediates_.end(), intermediate) !=
      intermediates_.end()) {
    return Ok();
  }
  auto chained = VerifyCertificateChain(intermediate, intermediates_, roots_,
                                        std::chrono::system_clock::now());
  if (!chained) return Fail(chained.error().WithContext("TLS server: client intermediate"));
  // X509_STORE locks internally, so handshakes verifying right now are safe.
  X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
  if (store == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS server: SSL_CTX_get_cert_store"));
  }
  MOAT_TRY(AddToStore(store, intermediate));
  intermediates_.push_back(intermediate);
  return Ok();
}

// ---- TlsClientContext ----

TlsClientContext::TlsClientContext(TlsClientConfig config, void* roots)
    : config_(std::move(config)), roots_(roots) {}

TlsClientContext::~TlsClientContext() {
  sk_X509_pop_free(static_cast<STACK_OF(X509)*>(roots_), X509_free);
}

Result<std::shared_ptr<TlsClientContext>> TlsClientContext::Create(const TlsClientConfig& config) {
  if (config.server_roots.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "TLS client: no server roots given");
  }
  if (config.certificate.has_value() != config.key.has_value()) {
    return Fail(ErrorCode::kInvalidArgument,
                "TLS client: a client certificate and its key go together");
  }
  if (!config.certificate && !config.chain.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "TLS client: a chain without a certificate");
  }
  if (config.certificate && !(config.certificate->public_key() == config.key->public_key())) {
    return Fail(ErrorCode::kInvalidArgument,
                "TLS client: the private key does not match certificate {}",
                config.certificate->Subject());
  }
  if (ClientPolicyIndex() < 0) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: SSL_CTX_get_ex_new_index"));
  }
  X509StackPtr roots(sk_X509_new_null());
  if (!roots) return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: sk_X509_new_null"));
  for (const Certificate& root : config.server_roots) {
    if (X509_up_ref(root.native()) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: X509_up_ref"));
    }
    if (sk_X509_push(roots.get(), root.native()) <= 0) {
      X509_free(root.native());
      return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: sk_X509_push"));
    }
  }
  auto context = std::shared_ptr<TlsClientContext>(new TlsClientContext(config, roots.release()));
  // Fail now, not at the first connection, if the settings do not apply.
  MOAT_ASSIGN_OR_RETURN(SSL_CTX * probe, context->NewNative());
  SSL_CTX_free(probe);
  return context;
}

Result<void> TlsClientContext::Configure(SSL_CTX* ctx) const {
  if (ctx == nullptr) return Fail(ErrorCode::kInvalidArgument, "TLS client: no SSL_CTX");
  MOAT_TRY(ConfigureCommon(ctx));
  auto* roots = static_cast<STACK_OF(X509)*>(roots_);
  // A store holding only server_roots replaces the SSL_CTX's (so nothing the system trusts is
  // even loaded); ClientCertVerify below makes verification independent of the store anyway.
  X509StorePtr store(X509_STORE_new());
  if (!store) return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: X509_STORE_new"));
  for (int i = 0; i < sk_X509_num(roots); ++i) {
    if (X509_STORE_add_cert(store.get(), sk_X509_value(roots, i)) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: X509_STORE_add_cert"));
    }
  }
  SSL_CTX_set_cert_store(ctx, store.release());  // takes ownership, frees the old store

  auto policy = std::make_unique<ClientPolicy>();
  policy->roots = X509_chain_up_ref(roots);
  if (policy->roots == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: X509_chain_up_ref"));
  }
  void* old_policy = SSL_CTX_get_ex_data(ctx, ClientPolicyIndex());
  if (SSL_CTX_set_ex_data(ctx, ClientPolicyIndex(), policy.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: SSL_CTX_set_ex_data"));
  }
  policy.release();                               // now owned by the SSL_CTX (FreeClientPolicy)
  delete static_cast<ClientPolicy*>(old_policy);  // Configure applied twice
  SSL_CTX_set_cert_verify_callback(ctx, ClientCertVerify, nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, ClientVerifyCallback);
  if (SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: SSL_CTX_set_purpose"));
  }
  if (!config_.server_name.empty()) {
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int ok = IsIpAddress(config_.server_name)
                       ? X509_VERIFY_PARAM_set1_ip_asc(param, config_.server_name.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, config_.server_name.c_str(),
                                                     config_.server_name.size());
    if (ok != 1) {
      return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                               fmt::format("TLS client: server name '{}'", config_.server_name)));
    }
  }
  if (config_.certificate) {
    MOAT_TRY(UseCredentials(ctx, *config_.certificate, config_.chain, *config_.key));
  }
  return Ok();
}

Result<SSL_CTX*> TlsClientContext::NewNative() const {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return Fail(OpenSslError(ErrorCode::kInternal, "TLS client: SSL_CTX_new"));
  MOAT_TRY(Configure(ctx.get()));
  return ctx.release();
}

Result<void> SetServerNameIndication(SSL* ssl, const std::string& host) {
  if (ssl == nullptr) return Fail(ErrorCode::kInvalidArgument, "TLS client: no SSL");
  if (host.empty() || IsIpAddress(host)) return Ok();
  if (SSL_set_tlsext_host_name(ssl, host.c_str()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                             fmt::format("TLS client: server name indication '{}'", host)));
  }
  return Ok();
}

// ---- Peer certificate ----

Result<Certificate> PeerCertificate(SSL* ssl) {
  if (ssl == nullptr) return Fail(ErrorCode::kInvalidArgument, "TLS: no connection");
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr) return Fail(ErrorCode::kNotFound, "TLS: the peer sent no certificate");
  // SECURITY: only a certificate the handshake verified is returned (a resumed session carries
  // the result of the original verification).
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    return Fail(ErrorCode::kVerificationFailed, "TLS: peer certificate: {}",
                X509_verify_cert_error_string(verify));
  }
  auto cert = CertificateFromX509(peer);
  if (!cert) return Fail(cert.error().WithContext("TLS: peer certificate"));
  return std::move(*cert);
}

// ---- Blocking connections ----

namespace {

using Deadline = std::chrono::steady_clock::time_point;

// Runs `op` (an SSL_* call returning > 0 on success) until it succeeds, waiting for the socket as
// OpenSSL asks. nullopt: the deadline passed. 0: the peer closed the connection (close_notify).
template <typename Op>
Result<std::optional<int>> Drive(SSL* ssl, int fd, Deadline deadline, std::string_view what,
                                 Op op) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    const int rc = op();
    if (rc > 0) return std::optional<int>(rc);
    const int err = SSL_get_error(ssl, rc);
    short events = 0;
    if (err == SSL_ERROR_WANT_READ) {
      events = POLLIN;
    } else if (err == SSL_ERROR_WANT_WRITE) {
      events = POLLOUT;
    } else if (err == SSL_ERROR_ZERO_RETURN) {
      return std::optional<int>(0);
    } else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
      if (errno == 0)
        return Fail(ErrorCode::kUnavailable, "TLS {}: the peer closed the connection", what);
      return Fail(ErrorCode::kUnavailable, "TLS {}: {}", what, std::strerror(errno));
    } else {
      const long verify = SSL_get_verify_result(ssl);
      if (verify != X509_V_OK) {
        return Fail(ErrorCode::kVerificationFailed, "TLS {}: peer certificate: {}", what,
                    X509_verify_cert_error_string(verify));
      }
      return Fail(OpenSslError(ErrorCode::kUnavailable, fmt::format("TLS {}", what)));
    }
    for (;;) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::optional<int>();
      pollfd p{fd, events, 0};
      const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return Fail(ErrorCode::kUnavailable, "TLS {}: poll: {}", what, std::strerror(errno));
      if (n == 0) return std::optional<int>();
      break;
    }
  }
}

}  // namespace

Result<std::unique_ptr<TlsConnection>> TlsConnection::Handshake(SSL_CTX* ctx, bool client,
                                                                UniqueFd socket,
                                                                std::chrono::milliseconds timeout) {
  const int flags = ::fcntl(socket.get(), F_GETFL);
  if (flags < 0 || ::fcntl(socket.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return Fail(ErrorCode::kInvalidArgument, "TLS: not a usable socket: {}", std::strerror(errno));
  }
  internal::SslPtr ssl(SSL_new(ctx));
  if (!ssl) return Fail(OpenSslError(ErrorCode::kInternal, "TLS: SSL_new"));
  if (SSL_set_fd(ssl.get(), socket.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "TLS: SSL_set_fd"));
  }
  const Deadline deadline = std::chrono::steady_clock::now() + timeout;
  const std::string_view what = client ? "handshake (client)" : "handshake (server)";
  SSL* s = ssl.get();
  MOAT_ASSIGN_OR_RETURN(std::optional<int> done,
                        Drive(s, socket.get(), deadline, what,
                              [s, client] { return client ? SSL_connect(s) : SSL_accept(s); }));
  if (!done) return Fail(ErrorCode::kUnavailable, "TLS {}: timed out", what);
  if (*done == 0)
    return Fail(ErrorCode::kUnavailable, "TLS {}: the peer closed the connection", what);
  return std::unique_ptr<TlsConnection>(new TlsConnection(ssl.release(), std::move(socket)));
}

Result<std::unique_ptr<TlsConnection>> TlsConnection::Connect(const TlsClientContext& context,
                                                              UniqueFd socket,
                                                              std::chrono::milliseconds timeout) {
  MOAT_ASSIGN_OR_RETURN(SSL_CTX * raw, context.NewNative());
  SslCtxPtr ctx(raw);  // the connection's SSL holds its own reference
  return Handshake(ctx.get(), /*client=*/true, std::move(socket), timeout);
}

Result<std::unique_ptr<TlsConnection>> TlsConnection::Accept(const TlsServerContext& context,
                                                             UniqueFd socket,
                                                             std::chrono::milliseconds timeout) {
  return Handshake(context.native(), /*client=*/false, std::move(socket), timeout);
}

TlsConnection::~TlsConnection() {
  ERR_clear_error();
  // Non-blocking socket: one attempt, never waits; not after the peer's own close_notify.
  if ((SSL_get_shutdown(ssl_) & SSL_RECEIVED_SHUTDOWN) == 0) SSL_shutdown(ssl_);
  SSL_free(ssl_);
  ERR_clear_error();
}

Result<void> TlsConnection::Write(std::span<const uint8_t> data,
                                  std::chrono::milliseconds timeout) {
  if (data.empty()) return Ok();
  if (data.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return Fail(ErrorCode::kInvalidArgument, "TLS write: {} bytes at once", data.size());
  }
  const Deadline deadline = std::chrono::steady_clock::now() + timeout;
  SSL* s = ssl_;
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write completes the whole buffer (retried with
  // the same arguments after WANT_*).
  MOAT_ASSIGN_OR_RETURN(std::optional<int> written,
                        Drive(s, socket_.get(), deadline, "write", [s, data] {
                          return SSL_write(s, data.data(), static_cast<int>(data.size()));
                        }));
  if (!written) return Fail(ErrorCode::kUnavailable, "TLS write: timed out");
  if (*written == 0)
    return Fail(ErrorCode::kUnavailable, "TLS write: the peer closed the connection");
  return Ok();
}

Result<std::optional<size_t>> TlsConnection::Read(std::span<uint8_t> out,
                                                  std::chrono::milliseconds timeout) {
  if (out.empty()) return Fail(ErrorCode::kInvalidArgument, "TLS read: empty buffer");
  const int size = static_cast<int>(std::min<size_t>(out.size(), 1 << 30));
  const Deadline deadline = std::chrono::steady_clock::now() + timeout;
  SSL* s = ssl_;
  MOAT_ASSIGN_OR_RETURN(std::optional<int> n,
                        Drive(s, socket_.get(), deadline, "read",
                              [s, out, size] { return SSL_read(s, out.data(), size); }));
  if (!n) return std::optional<size_t>();
  return std::optional<size_t>(static_cast<size_t>(*n));
}

Result<Certificate> TlsConnection::Peer() const { return PeerCertificate(ssl_); }

}  // namespace moat::crypto
