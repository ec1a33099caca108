// moatd's side of the apps' device-authentication channel (supervisor/device_auth.h,
// docs/supervisor.md "Device authentication"): lends an app whose manifest names this device's
// tenant the device's TLS client certificate chain and signatures with the key store's TLS
// client key. The key never leaves the key store (software, tpm2 or pkcs11 alike: only
// KeyStore::SignDigest is used).
//
// Refusals (kFailedPrecondition / kPermissionDenied, with a message the app may see):
//   - moatd does not know its tenant yet (the service names it in GET /device/v1/whoami,
//     "tenant_id", after attestation; remembered in <state_dir>/tenant.json);
//   - the manifest's tenant is not the device's tenant;
//   - the device has no client certificate, or it is not valid now (expired, e.g. after failed
//     attestations): an app never authenticates with a certificate the service stopped renewing.
//
// Thread-safe (called from the device-authentication server's thread while the agent updates
// the tenant).
#pragma once

#include <filesystem>
#include <mutex>
#include <optional>

#include "core/clock.h"
#include "device/agent/attestor.h"
#include "device/supervisor/device_auth.h"
#include "formats/guid.h"
#include "rot/key_store.h"

namespace moat::device::agent {

class DeviceCredentials final : public supervisor::DeviceAuthority {
 public:
  // `tenant_file`: where the tenant ID is remembered (<state_dir>/tenant.json).
  DeviceCredentials(const Attestor& attestor, rot::KeyStore& keys, const Clock& clock,
                    std::filesystem::path tenant_file);

  // Reads the remembered tenant; a missing file means "not known yet". kInvalidArgument for a
  // file that does not parse.
  Result<void> Load();
  std::optional<formats::Guid> tenant() const;
  // Remembers the tenant the service named (written only when it changed).
  Result<void> SetTenant(const formats::Guid& tenant);

  Result<std::string> CertificateChainPem(const formats::Guid& tenant) override;
  Result<std::vector<uint8_t>> SignDigest(const formats::Guid& tenant,
                                          const std::array<uint8_t, 32>& digest) override;

 private:
  // The saved client certificate chain, when `tenant` is this device's and it is valid now.
  Result<CertificateChain> UsableChain(const formats::Guid& tenant) const;

  const Attestor& attestor_;
  rot::KeyStore& keys_;
  const Clock& clock_;
  const std::filesystem::path tenant_file_;
  mutable std::mutex mu_;
  std::optional<formats::Guid> tenant_;  // guarded by mu_
};

// The device's tenant from a GET /device/v1/whoami answer ("tenant_id"). kNotFound when the
// service does not say (an older service, or an unclaimed device), kInvalidArgument when it is
// not a GUID.
Result<formats::Guid> TenantFromWhoAmI(std::string_view body);

}  // namespace moat::device::agent
