// What every operator-plane (/api/v1) handler shares: the roles, the authenticated operator
// behind a request, the tenant lookup, and the audit writer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "store/database.h"

namespace moat::service {

// Tenant roles form a ladder (Reader < Contributor < Administrator). Manufacturer is
// service-wide only and outside the ladder: it may register devices and nothing else.
enum class Role { kReader, kContributor, kAdministrator, kManufacturer };
std::string_view RoleName(Role role);  // "Reader", "Contributor", "Administrator", "Manufacturer"
Result<Role> ParseRole(std::string_view name);

// The scope of a service-wide role assignment (a tenant's ID otherwise).
inline constexpr std::string_view kServiceScope = "*";

// The authenticated operator (Api authenticates it from the client certificate).
struct Caller {
  std::string id;
  std::string name;
  std::vector<std::pair<std::string, Role>> roles;  // (scope, role)

  bool IsServiceAdministrator() const {
    for (const auto& [scope, role] : roles) {
      if (scope == kServiceScope && role == Role::kAdministrator) return true;
    }
    return false;
  }
  bool MayRegisterDevices() const {
    for (const auto& [scope, role] : roles) {
      if (scope == kServiceScope && (role == Role::kManufacturer || role == Role::kAdministrator)) {
        return true;
      }
    }
    return false;
  }
  // The caller's role in `tenant_id`; a service-wide role applies to every tenant.
  std::optional<Role> RoleIn(std::string_view tenant_id) const {
    std::optional<Role> best;
    for (const auto& [scope, role] : roles) {
      if (role == Role::kManufacturer) continue;  // grants no tenant access
      if (scope == kServiceScope || scope == tenant_id) {
        if (!best || role > *best) best = role;
      }
    }
    return best;
  }
};

struct Tenant {
  std::string id;
  std::string name;
  int64_t created_at = 0;
};

// The tenant named `name`; kNotFound "no tenant '<name>'" if there is none. It does not check
// the caller's access: a handler answers 404 for a tenant the caller has no role in, too.
Result<Tenant> FindTenant(store::Database& db, std::string_view name);

// The tenant a route names in its path segment `{t}` (percent-decoded: the CLI sends "Big%20Corp"),
// if `caller` holds a role in it. SECURITY: a tenant the caller has no role in is kNotFound
// "no tenant '<name>'", exactly like a missing one; a malformed segment is kInvalidArgument;
// database errors pass through.
Result<Tenant> FindCallersTenant(store::Database& db, const Caller& caller,
                                 std::string_view path_segment);

// Appends to the audit log on behalf of `caller` (nullptr: the service itself).
Result<void> AuditAs(store::Session& s, int64_t at, const Caller* caller,
                     std::string_view tenant_id, std::string_view action, std::string_view target,
                     std::string_view outcome, std::string_view detail);

}  // namespace moat::service
