#include "service/audit.h"

#include <string>

namespace moat::service {

Result<void> AppendAudit(store::Session& s, const AuditEntry& e) {
  MOAT_ASSIGN_OR_RETURN(store::Row row,
                        s.QueryOne("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log"));
  MOAT_ASSIGN_OR_RETURN(int64_t seq, row.Int(0));
  auto text_or_null = [](std::optional<std::string_view> v) {
    return v && !v->empty() ? store::Value(std::string(*v)) : store::Value(store::kNull);
  };
  MOAT_TRY(s.Execute(
      "INSERT INTO audit_log (seq, at, operator_id, operator_name, tenant_id, action, target, "
      "outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {seq, e.at, text_or_null(e.actor ? std::optional(e.actor->id) : std::nullopt),
       text_or_null(e.actor ? std::optional(e.actor->name) : std::nullopt),
       text_or_null(e.tenant_id), std::string(e.action), std::string(e.target),
       std::string(e.outcome), std::string(e.detail)}));
  return Ok();
}

Result<void> AppendSecurityEvent(store::Session& s, const SecurityEvent& e) {
  MOAT_ASSIGN_OR_RETURN(store::Row row,
                        s.QueryOne("SELECT COALESCE(MAX(seq), 0) + 1 FROM security_events"));
  MOAT_ASSIGN_OR_RETURN(int64_t seq, row.Int(0));
  MOAT_TRY(s.Execute(
      "INSERT INTO security_events (seq, at, tenant_id, device_id, kind, detail) VALUES "
      "(?, ?, ?, ?, ?, ?)",
      {seq, e.at,
       e.tenant_id.empty() ? store::Value(store::kNull) : store::Value(std::string(e.tenant_id)),
       std::string(e.device_id), std::string(e.kind), std::string(e.detail)}));
  return Ok();
}

}  // namespace moat::service
