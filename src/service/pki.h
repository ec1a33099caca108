// The service's certificate authorities and what they issue.
//
//   service root CA (self-signed, 20 years)
//     ├── operator CA (10 years): operators' client certificates (1 year)
//     ├── server certificate (1 year): moat-service's TLS identity, SANs from `init`
//     └── tenant CAs (2 years each, successor 90 days before expiry): device certificates
//
// The root and operator CA keys are files in <data-dir>/pki (mode 0600). Tenant CA keys are
// kept in the database, sealed (AES-256-GCM) under the master key in <data-dir>/pki, so every
// replica sharing the database can issue, and a database dump alone reveals no CA key.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "crypto/aead.h"
#include "crypto/key.h"
#include "crypto/x509.h"

namespace moat::service {

struct PkiLifetimes {
  std::chrono::seconds root{std::chrono::days(20 * 365)};
  std::chrono::seconds operator_ca{std::chrono::days(10 * 365)};
  std::chrono::seconds server{std::chrono::days(365)};
  std::chrono::seconds operator_certificate{std::chrono::days(365)};
  std::chrono::seconds tenant_ca{std::chrono::days(730)};
  std::chrono::seconds tenant_ca_successor_lead{std::chrono::days(90)};
  std::chrono::seconds device_certificate{std::chrono::hours(24)};
  // The certificate a device gets even when its attestation fails, so it can still update
  // itself back to health (accepted on the update and report endpoints only).
  std::chrono::seconds update_certificate{std::chrono::hours(24)};
  // How long an attestation challenge (nonce) may be answered.
  std::chrono::seconds attestation_challenge{std::chrono::minutes(2)};
  // Issued certificates start a little in the past so a device whose clock lags still accepts
  // them; their end is exactly start + lifetime measured from now.
  std::chrono::seconds backdate{std::chrono::minutes(5)};
};

// Paths inside a data directory.
struct DataDirLayout {
  explicit DataDirLayout(std::filesystem::path dir) : root(std::move(dir)) {}
  std::filesystem::path root;
  std::filesystem::path pki() const { return root / "pki"; }
  std::filesystem::path root_ca_certificate() const { return pki() / "root-ca.crt"; }
  std::filesystem::path root_ca_key() const { return pki() / "root-ca.key"; }
  std::filesystem::path operator_ca_certificate() const { return pki() / "operator-ca.crt"; }
  std::filesystem::path operator_ca_key() const { return pki() / "operator-ca.key"; }
  std::filesystem::path server_certificate() const { return pki() / "server.crt"; }
  std::filesystem::path server_key() const { return pki() / "server.key"; }
  std::filesystem::path master_key() const { return pki() / "master.key"; }
  std::filesystem::path database() const { return root / "moat.db"; }
  std::filesystem::path config() const { return root / "service.json"; }
  // The image store's blobs, one file per image named by its SHA-256.
  std::filesystem::path images() const { return root / "images"; }
};

struct CertifiedKey {
  crypto::Certificate certificate;
  crypto::PrivateKey key;
};

// Everything the service needs to run its PKI; loaded once at start.
class ServicePki {
 public:
  // Creates a new root, operator CA, server certificate and master key (init).
  static Result<ServicePki> Create(std::string_view service_name,
                                   const std::vector<std::string>& server_dns,
                                   const std::vector<std::string>& server_ips, const Clock& clock,
                                   const PkiLifetimes& lifetimes = {});
  // Writes the material into layout.pki() (keys 0600); refuses to overwrite anything.
  Result<void> Save(const DataDirLayout& layout) const;
  static Result<ServicePki> Load(const DataDirLayout& layout, const PkiLifetimes& lifetimes = {});

  const CertifiedKey& root() const { return root_; }
  const CertifiedKey& operator_ca() const { return operator_ca_; }
  const CertifiedKey& server() const { return server_; }
  const PkiLifetimes& lifetimes() const { return lifetimes_; }

  // An operator's client certificate for the key in `csr` (whose signature is checked).
  // SAN urn:moat:operator:<operator_id>; CN is the operator's name.
  Result<crypto::Certificate> IssueOperatorCertificate(const crypto::CertificateRequest& csr,
                                                       std::string_view operator_id,
                                                       std::string_view name,
                                                       const Clock& clock) const;

  // A new tenant CA under the root, valid from `not_before` for lifetimes().tenant_ca.
  Result<CertifiedKey> CreateTenantCa(std::string_view tenant_name, SystemTime not_before) const;

  // Seals/unseals a tenant CA key for the database, bound to its certificate's serial.
  Result<std::vector<uint8_t>> SealKey(const crypto::PrivateKey& key,
                                       std::string_view serial) const;
  Result<crypto::PrivateKey> UnsealKey(std::span<const uint8_t> sealed,
                                       std::string_view serial) const;

 private:
  ServicePki(CertifiedKey root, CertifiedKey operator_ca, CertifiedKey server,
             crypto::AeadKey master, PkiLifetimes lifetimes)
      : root_(std::move(root)),
        operator_ca_(std::move(operator_ca)),
        server_(std::move(server)),
        master_(master),
        lifetimes_(lifetimes) {}

  CertifiedKey root_;
  CertifiedKey operator_ca_;
  CertifiedKey server_;
  crypto::AeadKey master_;
  PkiLifetimes lifetimes_;
};

inline constexpr std::string_view kOperatorSanPrefix = "urn:moat:operator:";

}  // namespace moat::service
