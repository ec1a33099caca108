#include "service/pki.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "core/file.h"

namespace moat::service {
namespace {

using std::chrono::days;
using std::chrono::hours;

class PkiTest : public ::testing::Test {
 protected:
  FakeClock clock_{*ParseRfc3339("2026-11-27T12:00:00Z")};
};

TEST_F(PkiTest, CreatesAChainThatVerifies) {
  auto pki = ServicePki::Create("Acme Fleet", {"moat.example"}, {"127.0.0.1"}, clock_);
  ASSERT_TRUE(pki) << pki.error().message();
  const auto& root = pki->root().certificate;
  EXPECT_TRUE(root.IsCa());
  EXPECT_EQ(root.SubjectCommonName(), "Acme Fleet Root CA");
  std::vector<crypto::Certificate> roots{root};
  EXPECT_TRUE(crypto::VerifyCertificateChain(pki->server().certificate, {}, roots, clock_.Now(),
                                             crypto::ExtendedKeyUsage::kServerAuth));
  EXPECT_EQ(pki->server().certificate.SanDnsNames(), std::vector<std::string>{"moat.example"});
  EXPECT_TRUE(
      crypto::VerifyCertificateChain(pki->operator_ca().certificate, {}, roots, clock_.Now()));
}

TEST_F(PkiTest, OperatorCertificatesChainThroughTheOperatorCa) {
  auto pki = *ServicePki::Create("Acme", {"localhost"}, {}, clock_);
  auto key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto csr = *crypto::CertificateRequest::Create(key, "alice");
  auto cert = pki.IssueOperatorCertificate(csr, "op-1", "alice", clock_);
  ASSERT_TRUE(cert) << cert.error().message();
  EXPECT_EQ(cert->SubjectCommonName(), "alice");
  EXPECT_EQ(cert->SanUris(), std::vector<std::string>{"urn:moat:operator:op-1"});
  EXPECT_EQ(cert->public_key(), key.public_key());
  std::vector<crypto::Certificate> inter{pki.operator_ca().certificate};
  std::vector<crypto::Certificate> roots{pki.root().certificate};
  EXPECT_TRUE(crypto::VerifyCertificateChain(*cert, inter, roots, clock_.Now(),
                                             crypto::ExtendedKeyUsage::kClientAuth));
  EXPECT_EQ(cert->NotAfter() - clock_.Now(), days(365));
}

TEST_F(PkiTest, TenantCaLivesTwoYearsUnderTheRoot) {
  auto pki = *ServicePki::Create("Acme", {"localhost"}, {}, clock_);
  auto ca = pki.CreateTenantCa("contoso", clock_.Now());
  ASSERT_TRUE(ca) << ca.error().message();
  EXPECT_TRUE(ca->certificate.IsCa());
  EXPECT_EQ(ca->certificate.SubjectCommonName(), "contoso Tenant CA");
  EXPECT_EQ(ca->certificate.NotAfter() - ca->certificate.NotBefore(), days(730));
  std::vector<crypto::Certificate> roots{pki.root().certificate};
  EXPECT_TRUE(crypto::VerifyCertificateChain(ca->certificate, {}, roots, clock_.Now()));
}

TEST_F(PkiTest, SealedKeysAreBoundToTheirSerial) {
  auto pki = *ServicePki::Create("Acme", {"localhost"}, {}, clock_);
  auto ca = *pki.CreateTenantCa("contoso", clock_.Now());
  auto sealed = pki.SealKey(ca.key, ca.certificate.SerialHex());
  ASSERT_TRUE(sealed);
  auto opened = pki.UnsealKey(*sealed, ca.certificate.SerialHex());
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_EQ(opened->public_key(), ca.key.public_key());
  // A sealed key moved to another CA's row does not open.
  auto swapped = pki.UnsealKey(*sealed, "00ff");
  ASSERT_FALSE(swapped);
  EXPECT_EQ(swapped.error().code(), ErrorCode::kVerificationFailed);
}

TEST_F(PkiTest, SavesPrivatelyLoadsBackAndNeverOverwrites) {
  auto tmp = *TempDir::Create("moat-pki");
  DataDirLayout layout(tmp.path());
  auto pki = *ServicePki::Create("Acme", {"localhost"}, {}, clock_);
  ASSERT_TRUE(pki.Save(layout));
  struct stat st {};
  for (const auto& p :
       {layout.root_ca_key(), layout.operator_ca_key(), layout.server_key(), layout.master_key()}) {
    ASSERT_EQ(::stat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << p;
  }
  auto loaded = ServicePki::Load(layout);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->root().certificate, pki.root().certificate);
  // The master key survives: a key sealed before opens after loading.
  auto ca = *pki.CreateTenantCa("t", clock_.Now());
  auto sealed = *pki.SealKey(ca.key, "01");
  EXPECT_TRUE(loaded->UnsealKey(sealed, "01"));
  auto again = pki.Save(layout);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
}

}  // namespace
}  // namespace moat::service
