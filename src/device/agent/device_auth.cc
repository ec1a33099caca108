#include "device/agent/device_auth.h"

#include <fmt/format.h>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"

namespace moat::device::agent {

DeviceCredentials::DeviceCredentials(const Attestor& attestor, rot::KeyStore& keys,
                                     const Clock& clock, std::filesystem::path tenant_file)
    : attestor_(attestor), keys_(keys), clock_(clock), tenant_file_(std::move(tenant_file)) {}

Result<void> DeviceCredentials::Load() {
  auto text = ReadFile(tenant_file_, 4096);
  if (!text) {
    if (text.error().code() == ErrorCode::kNotFound) return Ok();
    return Fail(text.error());
  }
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(*text, tenant_file_.string()));
  auto it = j.is_object() ? j.find("tenant_id") : j.end();
  if (it == j.end() || !it->is_string()) {
    return Fail(ErrorCode::kInvalidArgument, "{}: no \"tenant_id\" string", tenant_file_.string());
  }
  auto id = formats::Guid::Parse(it->get<std::string>());
  if (!id) return Fail(id.error().WithContext(tenant_file_.string()));
  std::lock_guard lock(mu_);
  tenant_ = *id;
  return Ok();
}

std::optional<formats::Guid> DeviceCredentials::tenant() const {
  std::lock_guard lock(mu_);
  return tenant_;
}

Result<void> DeviceCredentials::SetTenant(const formats::Guid& tenant) {
  std::lock_guard lock(mu_);
  if (tenant_ == tenant) return Ok();
  MOAT_TRY(AtomicWriteFile(tenant_file_, DumpJson(Json{{"tenant_id", tenant.ToString()}}),
                           {.mode = 0600}));
  log::Info("this device belongs to tenant {}", tenant.ToString());
  tenant_ = tenant;
  return Ok();
}

Result<CertificateChain> DeviceCredentials::UsableChain(const formats::Guid& tenant) const {
  const std::optional<formats::Guid> mine = this->tenant();
  if (!mine) {
    return Fail(ErrorCode::kFailedPrecondition,
                "this device does not know its tenant yet (the service names it after "
                "attestation)");
  }
  // SECURITY: an app is lent the device's identity only for the tenant that owns the device.
  if (*mine != tenant) {
    return Fail(ErrorCode::kPermissionDenied,
                "the app's DeviceAuthentication names tenant {}, but this device belongs to "
                "another tenant",
                tenant.ToString());
  }
  std::optional<CertificateChain> chain = attestor_.SavedClientCertificate();
  if (!chain) {
    return Fail(ErrorCode::kFailedPrecondition,
                "this device has no client certificate (it has not passed attestation)");
  }
  const SystemTime now = clock_.Now();
  const crypto::Certificate& leaf = chain->leaf();
  if (now < leaf.NotBefore() || now >= leaf.NotAfter()) {
    return Fail(ErrorCode::kFailedPrecondition,
                "this device has no valid client certificate (its certificate is valid from {} "
                "until {}; attestation has not renewed it)",
                FormatRfc3339(leaf.NotBefore()), FormatRfc3339(leaf.NotAfter()));
  }
  return std::move(*chain);
}

Result<std::string> DeviceCredentials::CertificateChainPem(const formats::Guid& tenant) {
  MOAT_ASSIGN_OR_RETURN(CertificateChain chain, UsableChain(tenant));
  std::string pem;
  for (const crypto::Certificate& c : chain.certificates) pem += c.ToPem();
  return pem;
}

Result<std::vector<uint8_t>> DeviceCredentials::SignDigest(const formats::Guid& tenant,
                                                           const std::array<uint8_t, 32>& digest) {
  MOAT_TRY(UsableChain(tenant));
  // SECURITY: the key store signs; the key's bytes are never read (and the digest never logged).
  auto signature = keys_.SignDigest(rot::kTlsClientKeyLabel, digest);
  if (!signature) {
    log::Warn("device authentication: the key store did not sign: {}", signature.error().message());
    return Fail(ErrorCode::kUnavailable, "the device's key store could not sign");
  }
  return signature;
}

Result<formats::Guid> TenantFromWhoAmI(std::string_view body) {
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(body, "whoami response"));
  if (!j.is_object()) return Fail(ErrorCode::kInvalidArgument, "whoami: not a JSON object");
  auto it = j.find("tenant_id");
  if (it == j.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty())) {
    return Fail(ErrorCode::kNotFound, "whoami: the service does not name the device's tenant");
  }
  if (!it->is_string()) return Fail(ErrorCode::kInvalidArgument, "whoami: tenant_id: not a string");
  auto id = formats::Guid::Parse(it->get<std::string>());
  if (!id) return Fail(id.error().WithContext("whoami: tenant_id"));
  return *id;
}

}  // namespace moat::device::agent
