// TLS contexts for Moat's mutual-TLS connections, and the peer certificate of a connection.
//
// Every Moat connection is TLS 1.3 only, with ECDHE over P-256 or X25519, no renegotiation (1.3
// has none) and no 0-RTT; session tickets are on, so a client may resume. Trust comes only from
// the certificates given here: the system trust store is never loaded.
//
// The SSL_CTX objects made here are configured once and then only read, except for
// TlsServerContext::AddClientIntermediate, which OpenSSL's internally locked X509_STORE makes
// safe while handshakes run. The private key stays an EVP_PKEY (PrivateKey::native()), so a key
// held by a TPM or PKCS#11 token through an OpenSSL provider works unchanged: its bytes are never
// needed.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/unique_fd.h"
#include "crypto/key.h"
#include "crypto/x509.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace moat::crypto {

enum class ClientCertificateMode {
  // The server asks for a certificate. One that is presented must chain to client_roots (and
  // carry an accepted usage), or the handshake fails; a client that sends none still completes
  // the handshake, and the application decides per request (so GET /healthz works without one).
  kRequestAndVerify,
  // As above, but a client that sends no certificate fails the handshake.
  kRequire,
};

struct TlsServerConfig {
  Certificate certificate;         // the server's leaf; must match `key`
  std::vector<Certificate> chain;  // sent after the leaf (intermediates; the root may be omitted)
  PrivateKey key;
  // Trust anchors for client certificates. Required.
  std::vector<Certificate> client_roots;
  // Known intermediates (e.g. tenant CAs), so a client may send only its leaf. They are issuers,
  // not anchors: a chain through one must still end at one of client_roots.
  std::vector<Certificate> client_intermediates;
  ClientCertificateMode client_certificates = ClientCertificateMode::kRequestAndVerify;
  // A presented client leaf must list at least one of these in its extendedKeyUsage (a leaf
  // without the extension is refused). The default is clientAuth; a later "update" certificate
  // with a Moat-specific usage is added here. Empty means the TLS layer checks no usage at all,
  // and then the APPLICATION MUST check it per request (Certificate::HasExtendedKeyUsage).
  std::vector<ExtendedKeyUsage> client_usages = {ExtendedKeyUsage::kClientAuth};
  // Also accept a device's self-certified bootstrap certificate (IsSelfCertifiedDeviceCertificate
  // in x509.h), which chains to nothing. SECURITY: the application must then tell such a peer
  // apart (it has no issuer among client_roots) and grant it only what a bare key deserves.
  bool accept_device_identity_certificates = false;
  // ALPN protocols the server accepts, in preference order. A client that offers ALPN but none of
  // these fails the handshake (no cross-protocol confusion); one that offers none is accepted.
  std::vector<std::string> alpn_protocols = {"http/1.1"};
};

// A server-side SSL_CTX. Immutable after Create except for AddClientIntermediate.
class TlsServerContext {
 public:
  // kInvalidArgument if the key does not match the certificate, the certificate is not a
  // server (serverAuth) leaf, or client_roots is empty or holds a non-CA.
  static Result<std::shared_ptr<TlsServerContext>> Create(const TlsServerConfig& config);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // Borrowed; valid as long as this object lives. For handing to a TLS stream implementation.
  SSL_CTX* native() const { return ctx_; }
  // A new reference to native() that the caller owns and must free with SSL_CTX_free, or hand to
  // something that takes ownership (boost::asio::ssl::context(native_handle_type) does).
  SSL_CTX* AcquireNative() const;

  // Trusts `intermediate` as an issuer of client certificates from the next handshake on (e.g. a
  // new tenant CA). Thread-safe. kInvalidArgument if it is not a CA; kVerificationFailed if it
  // does not chain to client_roots (through the intermediates already known) now.
  Result<void> AddClientIntermediate(const Certificate& intermediate);

 private:
  TlsServerContext(SSL_CTX* ctx, std::vector<Certificate> roots,
                   std::vector<Certificate> intermediates);
  SSL_CTX* ctx_;  // owned (one reference)
  const std::vector<Certificate> roots_;
  std::mutex mu_;
  std::vector<Certificate> intermediates_;  // guarded by mu_
};

struct TlsClientConfig {
  // Trust anchors for the server's certificate. Required; the system store is never used.
  std::vector<Certificate> server_roots;
  // The client's own certificate (optional: without one the client sends none).
  std::optional<Certificate> certificate;
  std::vector<Certificate> chain;  // sent after the leaf
  std::optional<PrivateKey> key;   // required with `certificate`
  // If set, the server's certificate must be valid for this DNS name or IP address (checked
  // inside chain verification, in addition to any host check the caller makes).
  std::string server_name;
};

// Client-side TLS settings, applied to an SSL_CTX made by us (NewNative) or by a library.
// Immutable; safe to use from several threads.
class TlsClientContext {
 public:
  // kInvalidArgument if the key is missing for or does not match the certificate, or
  // server_roots is empty.
  static Result<std::shared_ptr<TlsClientContext>> Create(const TlsClientConfig& config);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  // Applies everything to `ctx`: TLS 1.3 only, groups, peer verification against server_roots
  // ONLY (a verification callback supplies them as the trust anchors, so whatever the ctx's
  // X509_STORE holds — libcurl may load the system bundle into it — is never trusted), an
  // explicit serverAuth check on the server's leaf, server_name, and the client certificate and
  // key. The settings live in `ctx` (its ex_data), not in this object. Safe to call from several
  // threads on different SSL_CTXs.
  Result<void> Configure(SSL_CTX* ctx) const;

  // A new SSL_CTX (TLS client method) with Configure applied; the caller owns it
  // (SSL_CTX_free).
  Result<SSL_CTX*> NewNative() const;

  const std::string& server_name() const { return config_.server_name; }

 private:
  TlsClientContext(TlsClientConfig config, void* roots);
  const TlsClientConfig config_;
  void* roots_;  // STACK_OF(X509)* of server_roots, owned; copied into each configured SSL_CTX
};

// Sets the TLS server name indication on a client connection before its handshake. A DNS name
// is sent; an IP address (which SNI may not carry) or an empty name sends nothing. Host name
// verification is TlsClientConfig::server_name's job, not this.
Result<void> SetServerNameIndication(SSL* ssl, const std::string& host);

// A blocking TLS connection over a stream socket the caller has connected (or accepted), each
// call bounded by a timeout: for small programs without an event loop (the telemetry sample app)
// and for tests. The socket is made non-blocking and owned by the connection. Not thread-safe.
// SECURITY/robustness: a write to a connection the peer closed raises SIGPIPE unless the
// process ignores it, as such programs should.
// Errors: kUnavailable for a timeout, a closed connection or a failed handshake (naming
// OpenSSL's reason, e.g. the alert the peer sent); kVerificationFailed when the peer's
// certificate does not verify.
class TlsConnection {
 public:
  // Client handshake with `context`'s settings (TlsClientContext: server_roots, server_name,
  // client certificate and key; a FromSigner key signs through its signer).
  static Result<std::unique_ptr<TlsConnection>> Connect(const TlsClientContext& context,
                                                        UniqueFd socket,
                                                        std::chrono::milliseconds timeout);
  // Server handshake with `context`'s settings.
  static Result<std::unique_ptr<TlsConnection>> Accept(const TlsServerContext& context,
                                                       UniqueFd socket,
                                                       std::chrono::milliseconds timeout);
  // Sends close_notify (without waiting for the peer's) and closes the socket.
  ~TlsConnection();
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  // Writes all of `data`.
  Result<void> Write(std::span<const uint8_t> data, std::chrono::milliseconds timeout);
  // Reads what is available, at most out.size() (> 0) bytes, waiting up to `timeout` for some:
  // the number read, 0 when the peer closed the connection, nullopt when nothing came in time.
  Result<std::optional<size_t>> Read(std::span<uint8_t> out, std::chrono::milliseconds timeout);
  // The peer's verified certificate (PeerCertificate below).
  Result<Certificate> Peer() const;

 private:
  TlsConnection(SSL* ssl, UniqueFd socket) : ssl_(ssl), socket_(std::move(socket)) {}
  static Result<std::unique_ptr<TlsConnection>> Handshake(SSL_CTX* ctx, bool client,
                                                          UniqueFd socket,
                                                          std::chrono::milliseconds timeout);
  SSL* ssl_;  // owned
  UniqueFd socket_;
};

// The peer's certificate (leaf) on an established connection, as verified by the handshake.
// kNotFound when the peer sent none; kVerificationFailed if the connection's verification did
// not succeed (which a context made here never lets complete). Works on resumed sessions too.
// (No verified-chain accessor: OpenSSL does not keep the verified chain in a resumed session.)
Result<Certificate> PeerCertificate(SSL* ssl);

}  // namespace moat::crypto
