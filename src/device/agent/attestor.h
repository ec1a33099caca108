// One attestation round, as the device side of POST /device/v1/attestation[/challenge]
// (src/service/device_api.h): connect with the best credential the device has, fetch a nonce,
// sign evidence over the nonce and the measurement log with the identity key (in the key
// store), send it with a CSR for the TLS client key (also in the key store), and keep the
// certificates the service returns.
//
// Credentials, best first: the client certificate while it is valid, the update certificate
// while it is valid, else the self-certified identity certificate (first contact, or after
// being offline past both).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "crypto/x509.h"
#include "device/agent/config.h"
#include "formats/attestation.h"
#include "net/https_client.h"
#include "rot/key_store.h"

namespace moat::device::agent {

// A certificate with the CA that issued it, as the device presents it.
// The device ID the service knows this device by, the one the Attestor attests with: on a TPM,
// the endorsement key's (rot::EndorsementKey::DeviceId), else the identity key's
// (rot::DeviceIdOf). Also used by `moatd run`, `moatd identity` and moatctl status.
Result<std::string> DeviceId(const rot::KeyStore& keys);

struct CertificateChain {
  std::vector<crypto::Certificate> certificates;  // leaf first
  const crypto::Certificate& leaf() const { return certificates.front(); }
};

struct AttestationOutcome {
  SystemTime at;
  bool passed = false;
  std::vector<std::string> failures;  // the service's reasons when !passed
  std::optional<CertificateChain> client;
  CertificateChain update;
};

enum class CredentialKind { kIdentity, kUpdate, kClient };
std::string_view CredentialKindName(CredentialKind kind);

class Attestor {
 public:
  Attestor(const Config& config, rot::KeyStore& keys, const Clock& clock,
           crypto::Certificate service_root);

  // Runs one round with `log` (what the device measured). Errors: kUnavailable (cannot reach
  // the service; retry later), kPermissionDenied (the service refuses this device: unknown,
  // unclaimed, or its evidence does not verify — the message says which), others for
  // malformed answers. On success the certificates are already saved.
  Result<AttestationOutcome> AttestOnce(const formats::MeasurementLog& log,
                                        const std::string& os_version);

  // Certificates saved by earlier rounds (absent when there are none or they do not parse).
  std::optional<CertificateChain> SavedClientCertificate() const;
  std::optional<CertificateChain> SavedUpdateCertificate() const;

  // The credential AttestOnce would use now.
  CredentialKind BestCredential() const;

  // A connection to the service with the best credential; with `certified_only`, the identity
  // credential does not count (kFailedPrecondition: attest first).
  // `max_response_bytes` bounds every response body; `timeout` a whole request.
  Result<std::unique_ptr<net::HttpsClient>> Connect(
      bool certified_only, size_t max_response_bytes = size_t{64} << 20,
      std::chrono::seconds timeout = std::chrono::seconds(30)) const;

 private:
  const Config& config_;
  rot::KeyStore& keys_;
  const Clock& clock_;
  crypto::Certificate service_root_;
  StateLayout layout_;
};

}  // namespace moat::device::agent
