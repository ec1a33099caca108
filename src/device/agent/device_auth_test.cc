// DeviceCredentials over a real (software) key store and real certificates saved where the
// attestor keeps them: the chain and signatures an app gets, and each refusal (tenant unknown,
// another tenant, no certificate, an expired one).
#include "device/agent/device_auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file.h"
#include "crypto/digest.h"
#include "crypto/x509.h"
#include "rot/software_key_store.h"

namespace moat::device::agent {
namespace {

using ::testing::HasSubstr;

const formats::Guid kTenant = *formats::Guid::Parse("7d3a1c2e-1111-4222-8333-444455556666");
const formats::Guid kOther = *formats::Guid::Parse("00000000-aaaa-4bbb-8ccc-dddddddddddd");

class DeviceCredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("moat-device-auth");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    auto parsed =
        ParseConfig(fmt::format(R"({{"service_url":"https://m:1","service_root_certificate":"/r",
                        "state_dir":"{}"}})",
                                (dir_->path() / "state").string()),
                    dir_->path());
    ASSERT_TRUE(parsed) << parsed.error().message();
    config_ = std::move(*parsed);
    auto keys = rot::SoftwareKeyStore::Open(dir_->path() / "keys", rot::WarningOutput::kSilent);
    ASSERT_TRUE(keys) << keys.error().message();
    keys_ = std::move(*keys);
    ASSERT_TRUE(keys_->EnsureKey(rot::kTlsClientKeyLabel));
    // A root, a tenant CA and the device's client certificate for its TLS key.
    root_key_.emplace(*crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
    tenant_key_.emplace(*crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
    const SystemTime now = clock_.Now();
    root_.emplace(*crypto::SelfSignCertificate({.kind = crypto::CertificateProfile::Kind::kRootCa,
                                                .common_name = "root",
                                                .not_before = now - std::chrono::hours(1),
                                                .not_after = now + std::chrono::hours(1000)},
                                               *root_key_));
    tenant_ca_.emplace(
        *crypto::IssueCertificate({.kind = crypto::CertificateProfile::Kind::kIntermediateCa,
                                   .common_name = "tenant",
                                   .not_before = now - std::chrono::hours(1),
                                   .not_after = now + std::chrono::hours(1000)},
                                  tenant_key_->public_key(), *root_, *root_key_));
    attestor_.emplace(config_, *keys_, clock_, *root_);
    credentials_.emplace(*attestor_, *keys_, clock_, config_.state_dir / "tenant.json");
    ASSERT_TRUE(MakeDirectories(StateLayout(config_.state_dir).certificates(), 0700));
  }

  // Saves a client certificate valid from now for `hours`, as the attestor would.
  void SaveClientCertificate(std::chrono::hours hours) {
    const SystemTime now = clock_.Now();
    auto leaf = crypto::IssueCertificate({.kind = crypto::CertificateProfile::Kind::kClient,
                                          .common_name = "device",
                                          .not_before = now - std::chrono::minutes(5),
                                          .not_after = now + hours},
                                         *keys_->GetPublicKey(rot::kTlsClientKeyLabel), *tenant_ca_,
                                         *tenant_key_);
    ASSERT_TRUE(leaf) << leaf.error().message();
    ASSERT_TRUE(AtomicWriteFile(StateLayout(config_.state_dir).client_certificate(),
                                leaf->ToPem() + tenant_ca_->ToPem()));
  }

  FakeClock clock_{SystemTime(std::chrono::seconds(1'800'000'000))};
  std::optional<TempDir> dir_;
  Config config_;
  std::unique_ptr<rot::SoftwareKeyStore> keys_;
  std::optional<crypto::PrivateKey> root_key_, tenant_key_;
  std::optional<crypto::Certificate> root_, tenant_ca_;
  std::optional<Attestor> attestor_;
  std::optional<DeviceCredentials> credentials_;
};

TEST_F(DeviceCredentialsTest, LendsTheChainAndSignaturesOfTheKeyStoreKey) {
  SaveClientCertificate(std::chrono::hours(24));
  ASSERT_TRUE(credentials_->SetTenant(kTenant));
  auto pem = credentials_->CertificateChainPem(kTenant);
  ASSERT_TRUE(pem) << pem.error().message();
  auto chain = crypto::Certificate::ParsePemChain(*pem, 4);
  ASSERT_TRUE(chain);
  ASSERT_EQ(chain->size(), 2u) << "the leaf, then the tenant CA";
  EXPECT_EQ((*chain)[1], *tenant_ca_);
  const crypto::Sha256Digest digest = crypto::Sha256(std::string_view("CertificateVerify"));
  auto signature = credentials_->SignDigest(kTenant, digest);
  ASSERT_TRUE(signature) << signature.error().message();
  EXPECT_TRUE((*chain)[0].public_key().VerifyDigest(digest, *signature));

  // The tenant is remembered across restarts.
  DeviceCredentials again(*attestor_, *keys_, clock_, config_.state_dir / "tenant.json");
  ASSERT_TRUE(again.Load());
  EXPECT_EQ(again.tenant(), kTenant);
}

TEST_F(DeviceCredentialsTest, RefusesUnknownOrOtherTenantsAndMissingOrExpiredCertificates) {
  const crypto::Sha256Digest digest{};
  // No tenant known yet.
  SaveClientCertificate(std::chrono::hours(24));
  auto r = credentials_->CertificateChainPem(kTenant);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("does not know its tenant yet"));
  // Another tenant.
  ASSERT_TRUE(credentials_->SetTenant(kTenant));
  r = credentials_->CertificateChainPem(kOther);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_THAT(r.error().message(), HasSubstr("names tenant " + kOther.ToString()));
  auto s = credentials_->SignDigest(kOther, digest);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kPermissionDenied);
  // Expired: 25 h later the 24 h certificate is refused, for signatures too.
  clock_.Advance(std::chrono::hours(25));
  r = credentials_->CertificateChainPem(kTenant);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("no valid client certificate"));
  s = credentials_->SignDigest(kTenant, digest);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message(), HasSubstr("no valid client certificate"));
  // None at all.
  std::filesystem::remove(StateLayout(config_.state_dir).client_certificate());
  r = credentials_->CertificateChainPem(kTenant);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("has no client certificate"));
}

TEST(TenantFromWhoAmITest, ReadsTheServicesTenantId) {
  auto id = TenantFromWhoAmI(R"({"device_id":"ab","tenant":"acme","tenant_id":")" +
                             kTenant.ToString() + "\"}");
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(*id, kTenant);
  EXPECT_EQ(TenantFromWhoAmI(R"({"tenant":"acme"})").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(TenantFromWhoAmI(R"({"tenant_id":""})").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(TenantFromWhoAmI(R"({"tenant_id":7})").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(TenantFromWhoAmI(R"({"tenant_id":"acme"})"));
  EXPECT_FALSE(TenantFromWhoAmI("[]"));
}

}  // namespace
}  // namespace moat::device::agent
