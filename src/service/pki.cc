#include "service/pki.h"

#include "core/encoding.h"
#include "core/file.h"
#include "crypto/random.h"

namespace moat::service {
namespace {

constexpr size_t kMaxPemFile = 64 * 1024;

Result<CertifiedKey> LoadPair(const std::filesystem::path& cert_path,
                              const std::filesystem::path& key_path) {
  MOAT_ASSIGN_OR_RETURN(std::string cert_pem, ReadFile(cert_path, kMaxPemFile));
  auto cert = crypto::Certificate::FromPem(cert_pem);
  if (!cert) return Fail(cert.error().WithContext(cert_path.string()));
  MOAT_ASSIGN_OR_RETURN(std::string key_pem, ReadFile(key_path, kMaxPemFile));
  auto key = crypto::PrivateKey::FromPem(key_pem);
  crypto::Wipe(key_pem);
  if (!key) return Fail(key.error().WithContext(key_path.string()));
  if (!(key->public_key() == cert->public_key())) {
    return Fail(ErrorCode::kFailedPrecondition, "{} does not hold the key of {}", key_path.string(),
                cert_path.string());
  }
  return CertifiedKey{*cert, *key};
}

Result<void> SavePair(const CertifiedKey& pair, const std::filesystem::path& cert_path,
                      const std::filesystem::path& key_path) {
  MOAT_ASSIGN_OR_RETURN(crypto::SecretString pem, pair.key.ToPem());
  // SECURITY: private keys are 0600 and never overwrite an existing file.
  MOAT_TRY(AtomicWriteFile(key_path, pem.view(), {.mode = 0600, .exclusive = true}));
  MOAT_TRY(AtomicWriteFile(cert_path, pair.certificate.ToPem(), {.mode = 0644, .exclusive = true}));
  return Ok();
}

std::vector<uint8_t> SealContext(std::string_view serial) {
  std::string ad = "moat tenant-ca key:" + std::string(serial);
  return std::vector<uint8_t>(ad.begin(), ad.end());
}

}  // namespace

Result<ServicePki> ServicePki::Create(std::string_view service_name,
                                      const std::vector<std::string>& server_dns,
                                      const std::vector<std::string>& server_ips,
                                      const Clock& clock, const PkiLifetimes& lifetimes) {
  if (server_dns.empty() && server_ips.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "the server certificate needs at least one DNS name or IP address");
  }
  const SystemTime now = clock.Now();
  const SystemTime start = now - lifetimes.backdate;
  const std::string org(service_name);

  MOAT_ASSIGN_OR_RETURN(auto root_key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
  crypto::CertificateProfile root_profile{.kind = crypto::CertificateProfile::Kind::kRootCa,
                                          .common_name = org + " Root CA",
                                          .organization = org,
                                          .not_before = start,
                                          .not_after = now + lifetimes.root};
  MOAT_ASSIGN_OR_RETURN(auto root_cert, crypto::SelfSignCertificate(root_profile, root_key));

  MOAT_ASSIGN_OR_RETURN(auto op_key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
  crypto::CertificateProfile op_profile{.kind = crypto::CertificateProfile::Kind::kIntermediateCa,
                                        .common_name = org + " Operator CA",
                                        .organization = org,
                                        .not_before = start,
                                        .not_after = now + lifetimes.operator_ca,
                                        .path_length = 0};
  MOAT_ASSIGN_OR_RETURN(
      auto op_cert, crypto::IssueCertificate(op_profile, op_key.public_key(), root_cert, root_key));

  MOAT_ASSIGN_OR_RETURN(auto server_key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
  crypto::CertificateProfile server_profile{
      .kind = crypto::CertificateProfile::Kind::kServer,
      .common_name = server_dns.empty() ? server_ips.front() : server_dns.front(),
      .organization = org,
      .not_before = start,
      .not_after = now + lifetimes.server,
      .san_dns = server_dns,
      .san_ips = server_ips};
  MOAT_ASSIGN_OR_RETURN(
      auto server_cert,
      crypto::IssueCertificate(server_profile, server_key.public_key(), root_cert, root_key));
  crypto::AeadKey master;
  crypto::OpenSslRandom().Fill(master);
  return ServicePki({root_cert, root_key}, {op_cert, op_key}, {server_cert, server_key}, master,
                    lifetimes);
}

Result<void> ServicePki::Save(const DataDirLayout& layout) const {
  MOAT_TRY(MakeDirectories(layout.pki(), 0700));
  MOAT_TRY(SavePair(root_, layout.root_ca_certificate(), layout.root_ca_key()));
  MOAT_TRY(SavePair(operator_ca_, layout.operator_ca_certificate(), layout.operator_ca_key()));
  MOAT_TRY(SavePair(server_, layout.server_certificate(), layout.server_key()));
  return AtomicWriteFile(layout.master_key(), std::span<const uint8_t>(master_),
                         {.mode = 0600, .exclusive = true});
}

Result<ServicePki> ServicePki::Load(const DataDirLayout& layout, const PkiLifetimes& lifetimes) {
  MOAT_ASSIGN_OR_RETURN(auto root, LoadPair(layout.root_ca_certificate(), layout.root_ca_key()));
  MOAT_ASSIGN_OR_RETURN(auto op,
                        LoadPair(layout.operator_ca_certificate(), layout.operator_ca_key()));
  MOAT_ASSIGN_OR_RETURN(auto server, LoadPair(layout.server_certificate(), layout.server_key()));
  MOAT_ASSIGN_OR_RETURN(auto master_bytes, ReadFileBytes(layout.master_key(), 64));
  if (master_bytes.size() != 32) {
    return Fail(ErrorCode::kFailedPrecondition, "{} must hold exactly 32 bytes",
                layout.master_key().string());
  }
  crypto::AeadKey master;
  std::copy(master_bytes.begin(), master_bytes.end(), master.begin());
  crypto::Wipe(master_bytes);
  return ServicePki(std::move(root), std::move(op), std::move(server), master, lifetimes);
}

Result<crypto::Certificate> ServicePki::IssueOperatorCertificate(
    const crypto::CertificateRequest& csr, std::string_view operator_id, std::string_view name,
    const Clock& clock) const {
  MOAT_TRY(csr.VerifySignature());
  const SystemTime now = clock.Now();
  crypto::CertificateProfile profile{
      .kind = crypto::CertificateProfile::Kind::kClient,
      .common_name = std::string(name),
      .organization = root_.certificate.SubjectCommonName(),
      .not_before = now - lifetimes_.backdate,
      .not_after =
          std::min(now + lifetimes_.operator_certificate, operator_ca_.certificate.NotAfter()),
      .san_uris = {std::string(kOperatorSanPrefix) + std::string(operator_id)}};
  return crypto::IssueCertificate(profile, csr.public_key(), operator_ca_.certificate,
                                  operator_ca_.key);
}

Result<CertifiedKey> ServicePki::CreateTenantCa(std::string_view tenant_name,
                                                SystemTime not_before) const {
  MOAT_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
  crypto::CertificateProfile profile{.kind = crypto::CertificateProfile::Kind::kIntermediateCa,
                                     .common_name = fmt::format("{} Tenant CA", tenant_name),
                                     .organization = root_.certificate.SubjectCommonName(),
                                     .not_before = not_before,
                                     .not_after = not_before + lifetimes_.tenant_ca,
                                     .path_length = 0};
  MOAT_ASSIGN_OR_RETURN(
      auto cert, crypto::IssueCertificate(profile, key.public_key(), root_.certificate, root_.key));
  return CertifiedKey{cert, key};
}

Result<std::vector<uint8_t>> ServicePki::SealKey(const crypto::PrivateKey& key,
                                                 std::string_view serial) const {
  MOAT_ASSIGN_OR_RETURN(crypto::SecretString pem, key.ToPem());
  return crypto::AeadSeal(master_, AsBytes(pem.view()), SealContext(serial));
}

Result<crypto::PrivateKey> ServicePki::UnsealKey(std::span<const uint8_t> sealed,
                                                 std::string_view serial) const {
  MOAT_ASSIGN_OR_RETURN(auto pem, crypto::AeadOpen(master_, sealed, SealContext(serial)));
  auto key = crypto::PrivateKey::FromPem(AsChars(pem));
  crypto::Wipe(pem);
  return key;
}

}  // namespace moat::service
