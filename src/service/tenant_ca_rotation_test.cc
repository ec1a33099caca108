#include "service/tenant_ca_rotation.h"

#include <gtest/gtest.h>

#include "core/file.h"
#include "service/schema.h"
#include "store/sqlite.h"

namespace moat::service {
namespace {

using std::chrono::days;

class TenantCaRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tmp = TempDir::Create("moat-rotation");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto db = store::OpenSqlite({.path = tmp_->path() / "moat.db", .clock = &clock_}, Migrations());
    ASSERT_TRUE(db) << db.error().message();
    db_ = std::move(*db);
    auto pki = ServicePki::Create("Acme", {"localhost"}, {}, clock_);
    ASSERT_TRUE(pki);
    pki_ = std::make_unique<ServicePki>(std::move(*pki));
    // A tenant with its first CA, created the way the API does.
    auto ca = *pki_->CreateTenantCa("contoso", clock_.Now() - pki_->lifetimes().backdate);
    auto sealed = *pki_->SealKey(ca.key, ca.certificate.SerialHex());
    const int64_t now = store::UnixSeconds(clock_.Now());
    ASSERT_TRUE(db_->Transact([&](store::Session& s) -> Result<void> {
      MOAT_TRY(s.Execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                         {std::string("t1"), std::string("contoso"), now}));
      MOAT_TRY(
          s.Execute("INSERT INTO tenant_cas (serial_hex, tenant_id, certificate_pem, sealed_key, "
                    "not_before, not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    {ca.certificate.SerialHex(), std::string("t1"), ca.certificate.ToPem(), sealed,
                     store::UnixSeconds(ca.certificate.NotBefore()),
                     store::UnixSeconds(ca.certificate.NotAfter()), now}));
      return Ok();
    }));
    first_ = std::make_unique<crypto::Certificate>(ca.certificate);
  }

  int64_t CaCount() {
    auto row = db_->QueryOne("SELECT COUNT(*) FROM tenant_cas WHERE tenant_id = 't1'");
    return row ? *row->Int(0) : -1;
  }

  FakeClock clock_{*ParseRfc3339("2026-11-27T12:00:00Z")};
  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<ServicePki> pki_;
  std::unique_ptr<crypto::Certificate> first_;
};

TEST_F(TenantCaRotationTest, IssuesASuccessorNinetyDaysBeforeExpiryAndOnlyOnce) {
  auto none = IssueDueTenantCaSuccessors(*db_, *pki_, clock_);
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_TRUE(none->empty());

  clock_.Advance(days(639));  // 91 days (minus the 5-minute backdate) before expiry
  EXPECT_TRUE(IssueDueTenantCaSuccessors(*db_, *pki_, clock_)->empty());
  EXPECT_EQ(CaCount(), 1);

  clock_.Advance(days(1));  // now inside the 90-day window
  auto issued = IssueDueTenantCaSuccessors(*db_, *pki_, clock_);
  ASSERT_TRUE(issued) << issued.error().message();
  ASSERT_EQ(issued->size(), 1u);
  EXPECT_EQ((*issued)[0].tenant_name, "contoso");
  EXPECT_EQ(CaCount(), 2);
  const crypto::Certificate& successor = (*issued)[0].certificate;
  EXPECT_EQ(successor.NotAfter() - successor.NotBefore(), days(730));

  // During the overlap both CAs chain to the root and are valid.
  std::vector<crypto::Certificate> roots{pki_->root().certificate};
  EXPECT_TRUE(crypto::VerifyCertificateChain(*first_, {}, roots, clock_.Now()));
  EXPECT_TRUE(crypto::VerifyCertificateChain(successor, {}, roots, clock_.Now()));

  // Running again (a timer tick, another replica) issues nothing more.
  EXPECT_TRUE(IssueDueTenantCaSuccessors(*db_, *pki_, clock_)->empty());
  EXPECT_EQ(CaCount(), 2);
  auto audit = db_->QueryOne("SELECT COUNT(*) FROM audit_log WHERE action = 'tenant-ca.successor'");
  ASSERT_TRUE(audit);
  EXPECT_EQ(*audit->Int(0), 1);

  // The successor's own successor comes 640 days after it was issued.
  clock_.Advance(days(640));
  EXPECT_EQ(IssueDueTenantCaSuccessors(*db_, *pki_, clock_)->size(), 1u);
  EXPECT_EQ(CaCount(), 3);
}

}  // namespace
}  // namespace moat::service
