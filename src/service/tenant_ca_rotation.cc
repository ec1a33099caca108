#include "service/tenant_ca_rotation.h"

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
      MOAT_ASSIGN_OR_RETURN(store::Row seq,
                            s.QueryOne("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log"));
      MOAT_ASSIGN_OR_RETURN(int64_t next, seq.Int(0));
      MOAT_TRY(s.Execute(
          "INSERT INTO audit_log (seq, at, operator_id, operator_name, tenant_id, action, target, "
          "outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
          {next, t, store::kNull, store::kNull, tenant_id, std::string("tenant-ca.successor"),
           tenant_name, std::string("ok"),
           "successor CA serial " + ca.certificate.SerialHex() +
               " issued 90 days before the "
               "current one expires"}));
      stored = true;
      return Ok();
    }));
    if (stored) issued.push_back({tenant_name, ca.certificate});
  }
  return issued;
}

}  // namespace moat::service
