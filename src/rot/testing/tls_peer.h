// Test and benchmark helper: `openssl s_server` as an independent TLS 1.3 peer that demands
// and verifies a client certificate (-Verify), and a client that handshakes with it using a
// key-store TLS key.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>

#include "core/error.h"
#include "crypto/key.h"
#include "crypto/tls.h"
#include "crypto/x509.h"

namespace moat::rot::testing {

class OpenSslServer {
 public:
  // Makes a test CA under `dir`, a server certificate from it, and starts
  // `openssl s_server -www -Verify 1 -verify_return_error -tls1_3` on a free loopback port.
  static Result<std::unique_ptr<OpenSslServer>> Start(const std::filesystem::path& dir);
  ~OpenSslServer();

  // A client context presenting a certificate (issued now by the test CA) for `key`.
  Result<std::shared_ptr<crypto::TlsClientContext>> ClientFor(const crypto::PrivateKey& key);

  // One connection: handshake, "GET /", and the server's answer must be its 200 status page,
  // which it only sends after verifying the client certificate.
  Result<void> Handshake(const crypto::TlsClientContext& client);

 private:
  OpenSslServer() = default;
  crypto::PrivateKey ca_key_ = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  std::optional<crypto::Certificate> ca_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace moat::rot::testing
