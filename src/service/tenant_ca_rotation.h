// Tenant CA succession: a tenant CA lives 2 years; 90 days before the newest one expires, a
// successor is issued (valid from now) so devices get certificates from the successor while
// relying parties, who trust every unexpired CA of the tenant, accept both during the overlap.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "service/pki.h"
#include "store/database.h"

namespace moat::service {

struct IssuedSuccessor {
  std::string tenant_name;
  crypto::Certificate certificate;
};

// Issues a successor for every tenant whose newest CA expires within the successor lead time.
// Idempotent: a tenant that already has a CA beyond the lead time gets nothing. Each successor
// is stored in its own transaction with an audit entry.
Result<std::vector<IssuedSuccessor>> IssueDueTenantCaSuccessors(store::Database& db,
                                                                const ServicePki& pki,
                                                                const Clock& clock);

}  // namespace moat::service
