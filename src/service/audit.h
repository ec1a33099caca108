// The audit log: one row per operator action (and per action the service takes on its own),
// appended inside the same transaction as the change it records, so neither exists without
// the other.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "store/database.h"

namespace moat::service {

// Who acted; absent when the service itself acted (e.g. issuing a tenant CA successor).
struct AuditActor {
  std::string_view id;
  std::string_view name;
};

struct AuditEntry {
  int64_t at = 0;  // unix seconds
  std::optional<AuditActor> actor;
  std::string_view tenant_id;  // empty: service-wide
  std::string_view action;     // e.g. "tenant.create"
  std::string_view target;
  std::string_view outcome;  // "ok", "denied", "failed"
  std::string_view detail;
};

// Appends `entry` with the next sequence number (transactions are serialised, so numbers are
// gap-free and ordered).
Result<void> AppendAudit(store::Session& session, const AuditEntry& entry);

// Security events: what devices did that an operator must look at (a failed attestation, a
// signature that does not verify). Listed with `moat security-event list`.
struct SecurityEvent {
  int64_t at = 0;
  std::string_view tenant_id;  // empty: the device has no tenant
  std::string_view device_id;
  std::string_view kind;  // e.g. "attestation.measurement-mismatch"
  std::string_view detail;
};
Result<void> AppendSecurityEvent(store::Session& session, const SecurityEvent& event);

}  // namespace moat::service
