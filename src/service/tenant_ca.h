// The tenant CA that signs device certificates: the newest one already valid. During a
// succession both CAs are unexpired and relying parties trust both; new certificates come from
// the successor.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "service/pki.h"
#include "store/database.h"

namespace moat::service {

// Thread-safe. Unsealed keys are cached by certificate serial (a CA's key never changes), so
// issuing a device certificate costs one query and one signature.
class TenantCaCache {
 public:
  explicit TenantCaCache(const ServicePki& pki) : pki_(pki) {}

  // kFailedPrecondition if the tenant has no CA valid at `now` (should not happen: a successor
  // is issued 90 days ahead).
  Result<CertifiedKey> Issuing(store::Database& db, std::string_view tenant_id, SystemTime now);

 private:
  const ServicePki& pki_;
  std::mutex mu_;
  std::map<std::string, CertifiedKey, std::less<>> by_serial_;  // guarded by mu_
};

}  // namespace moat::service
