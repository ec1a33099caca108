#include "service/tenant_ca_rotation.h"

#include "service/audit.h"

namespace moat::service {

Result<std::vector<IssuedSuccessor>> IssueDueTenantCaSuccessors(store::Database& db,
                                                                const ServicePki& pki,
                                                                const Clock& clock) {
  const SystemTime now = clock.Now();
  const int64_t due_before = store::UnixSeconds(now + pki.lifetimes().tenant_ca_successor_lead);
  // The newest CA of each tenant, when it ends before `due_before`.
  MOAT_ASSIGN_OR_RETURN(auto due,
                        db.Query("SELECT t.id, t.name, MAX(c.not_after) FROM tenants t "
                                 "JOIN tenant_cas c ON c.tenant_id = t.id GROUP BY t.id, t.name "
                                 "HAVING MAX(c.not_after) <= ? ORDER BY t.name",
                                 {due_before}));
  std::vector<IssuedSuccessor> issued;
  for (const auto& row : due) {
    MOAT_ASSIGN_OR_RETURN(std::string tenant_id, row.Text(0));
    MOAT_ASSIGN_OR_RETURN(std::string tenant_name, row.Text(1));
    MOAT_ASSIGN_OR_RETURN(CertifiedKey ca,
                          pki.CreateTenantCa(tenant_name, now - pki.lifetimes().backdate));
    MOAT_ASSIGN_OR_RETURN(auto sealed, pki.SealKey(ca.key, ca.certificate.SerialHex()));
    const int64_t t = store::UnixSeconds(now);
    bool stored = false;
    MOAT_TRY(db.Transact([&](store::Session& s) -> Result<void> {
      stored = false;
      // Re-check inside the transaction: another replica may have issued one meanwhile.
      MOAT_ASSIGN_OR_RETURN(
          store::Row newest,
          s.QueryOne("SELECT MAX(not_after) FROM tenant_cas WHERE tenant_id = ?", {tenant_id}));
      MOAT_ASSIGN_OR_RETURN(int64_t newest_end, newest.Int(0));
      if (newest_end > due_before) return Ok();
      MOAT_TRY(
          s.Execute("INSERT INTO tenant_cas (serial_hex, tenant_id, certificate_pem, sealed_key, "
                    "not_before, not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    {ca.certificate.SerialHex(), tenant_id, ca.certificate.ToPem(), sealed,
                     store::UnixSeconds(ca.certificate.NotBefore()),
                     store::UnixSeconds(ca.certificate.NotAfter()), t}));
      const std::string detail = "successor CA serial " + ca.certificate.SerialHex() +
                                 " issued 90 days before the current one expires";
      MOAT_TRY(AppendAudit(s, {.at = t,
                               .tenant_id = tenant_id,
                               .action = "tenant-ca.successor",
                               .target = tenant_name,
                               .outcome = "ok",
                               .detail = detail}));
      stored = true;
      return Ok();
    }));
    if (stored) issued.push_back({tenant_name, ca.certificate});
  }
  return issued;
}

}  // namespace moat::service
