#include "service/tenant_ca.h"

namespace moat::service {

Result<CertifiedKey> TenantCaCache::Issuing(store::Database& db, std::string_view tenant_id,
                                            SystemTime now) {
  const int64_t t = store::UnixSeconds(now);
  auto row = db.QueryOne(
      "SELECT serial_hex FROM tenant_cas WHERE tenant_id = ? AND not_before <= ? AND "
      "not_after > ? ORDER BY not_before DESC, serial_hex LIMIT 1",
      {std::string(tenant_id), t, t});
  if (!row) {
    if (row.error().code() == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kFailedPrecondition, "tenant {} has no CA valid now", tenant_id);
    }
    return Fail(row.error());
  }
  MOAT_ASSIGN_OR_RETURN(std::string serial, row->Text(0));
  {
    std::lock_guard lock(mu_);
    if (auto it = by_serial_.find(serial); it != by_serial_.end()) return it->second;
  }
  MOAT_ASSIGN_OR_RETURN(
      store::Row full,
      db.QueryOne("SELECT certificate_pem, sealed_key FROM tenant_cas WHERE serial_hex = ?",
                  {serial}));
  MOAT_ASSIGN_OR_RETURN(std::string pem, full.Text(0));
  MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> sealed, full.Blob(1));
  MOAT_ASSIGN_OR_RETURN(crypto::Certificate cert, crypto::Certificate::FromPem(pem));
  MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey key, pki_.UnsealKey(sealed, serial));
  CertifiedKey ca{std::move(cert), std::move(key)};
  std::lock_guard lock(mu_);
  by_serial_.insert_or_assign(serial, ca);
  return ca;
}

}  // namespace moat::service
