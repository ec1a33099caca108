#include "crypto/x509.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/encoding.h"
#include "core/file.h"
#include "support/pki.h"
#include "support/shell.h"

namespace moat::crypto {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using namespace std::chrono_literals;

// ---- Helpers ----

std::filesystem::path PkiFile(std::string_view name) { return test_support::TestPkiFile(name); }
std::string ReadPki(std::string_view name) { return test_support::ReadTestPki(name); }

Certificate PkiCert(std::string_view name) {
  auto cert = Certificate::FromPem(ReadPki(name));
  EXPECT_TRUE(cert.has_value()) << name << ": " << cert.error().message();
  return *cert;
}

PrivateKey PkiKey(std::string_view name) {
  auto key = PrivateKey::FromPem(ReadPki(name));
  EXPECT_TRUE(key.has_value()) << name;
  return *key;
}

using test_support::RunShell;

std::string WriteTemp(const TempDir& dir, std::string_view name, std::string_view text) {
  const auto path = dir.path() / name;
  EXPECT_TRUE(AtomicWriteFile(path, text).has_value()) << path;
  return path.string();
}

std::string WriteTemp(const TempDir& dir, std::string_view name, std::span<const uint8_t> data) {
  return WriteTemp(dir, name, AsChars(data));
}

long long EpochSeconds(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

SystemTime Utc(int y, unsigned m, unsigned d) {
  return SystemTime(std::chrono::sys_days(std::chrono::year{y} / m / d));
}

template <typename T>
ErrorCode CodeOf(const Result<T>& result) {
  EXPECT_FALSE(result.has_value());
  return result.has_value() ? ErrorCode::kInternal : result.error().code();
}

template <typename T>
std::string MessageOf(const Result<T>& result) {
  return result.has_value() ? std::string("<no error>") : result.error().message();
}

// A fixed "now" for certificates we issue, far from the wall clock, so tests are hermetic;
// openssl is told the same time with -attime.
const SystemTime kT0 = Utc(2030, 1, 1) + 12h;
const std::string kDeviceId(64, 'a');

CertificateProfile MakeProfile(CertificateProfile::Kind kind, std::string common_name,
                               SystemTime not_before = kT0 - 1h,
                               SystemTime not_after = kT0 + 24h * 365) {
  CertificateProfile profile;
  profile.kind = kind;
  profile.common_name = std::move(common_name);
  profile.not_before = not_before;
  profile.not_after = not_after;
  return profile;
}

// A root -> intermediate -> 24 h client leaf chain made by our own code.
struct OurChain {
  PrivateKey root_key;
  Certificate root;
  PrivateKey intermediate_key;
  Certificate intermediate;
  PrivateKey leaf_key;
  Certificate leaf;
};

OurChain MakeChain(KeyType type = KeyType::kEcdsaP256) {
  auto root_key = PrivateKey::Generate(type);
  auto intermediate_key = PrivateKey::Generate(type);
  auto leaf_key = PrivateKey::Generate(KeyType::kEcdsaP256);
  EXPECT_TRUE(root_key && intermediate_key && leaf_key);

  CertificateProfile root_profile = MakeProfile(CertificateProfile::Kind::kRootCa,
                                                "Moat Service Root", kT0 - 24h, kT0 + 24h * 3650);
  root_profile.organization = "Moat";
  auto root = SelfSignCertificate(root_profile, *root_key);
  EXPECT_TRUE(root.has_value()) << MessageOf(root);

  CertificateProfile intermediate_profile = MakeProfile(CertificateProfile::Kind::kIntermediateCa,
                                                        "Tenant CA", kT0 - 24h, kT0 + 24h * 365);
  intermediate_profile.organization = "Moat";
  intermediate_profile.path_length = 0;
  auto intermediate =
      IssueCertificate(intermediate_profile, intermediate_key->public_key(), *root, *root_key);
  EXPECT_TRUE(intermediate.has_value()) << MessageOf(intermediate);

  CertificateProfile leaf_profile =
      MakeProfile(CertificateProfile::Kind::kClient, kDeviceId, kT0, kT0 + 24h);
  leaf_profile.san_uris = {DeviceSanUri(kDeviceId)};
  auto leaf =
      IssueCertificate(leaf_profile, leaf_key->public_key(), *intermediate, *intermediate_key);
  EXPECT_TRUE(leaf.has_value()) << MessageOf(leaf);
  return OurChain{*root_key, *root, *intermediate_key, *intermediate, *leaf_key, *leaf};
}

bool ExtensionIsCritical(const Certificate& cert, int nid) {
  const int index = X509_get_ext_by_NID(cert.native(), nid, -1);
  EXPECT_GE(index, 0) << OBJ_nid2sn(nid) << " missing";
  return index >= 0 && X509_EXTENSION_get_critical(X509_get_ext(cert.native(), index)) == 1;
}

bool HasExtension(const Certificate& cert, int nid) {
  return X509_get_ext_by_NID(cert.native(), nid, -1) >= 0;
}

std::vector<uint8_t> OctetBytes(const ASN1_OCTET_STRING* s) {
  if (s == nullptr) return {};
  return std::vector<uint8_t>(ASN1_STRING_get0_data(s),
                              ASN1_STRING_get0_data(s) + ASN1_STRING_length(s));
}

// Re-signs a copy of `cert` after `edit` changed it (for inputs our issuer would never make).
Certificate Resign(const Certificate& cert, const PrivateKey& key,
                   const std::function<void(X509*)>& edit) {
  X509* copy = X509_dup(cert.native());
  edit(copy);
  EXPECT_GT(X509_sign(copy, key.native(), EVP_sha256()), 0);
  unsigned char* der = nullptr;
  const int len = i2d_X509(copy, &der);
  std::vector<uint8_t> bytes(der, der + len);
  OPENSSL_free(der);
  X509_free(copy);
  auto out = Certificate::FromDer(bytes);
  EXPECT_TRUE(out.has_value()) << MessageOf(out);
  return *out;
}

// ---- The openssl-made test PKI ----

class OpensslPkiTest : public ::testing::Test {
 protected:
  Certificate root_ = PkiCert("root-ca.crt");
  Certificate intermediate_ = PkiCert("intermediate-ca.crt");
  Certificate leaf_ = PkiCert("leaf.crt");
  Certificate foreign_ = PkiCert("foreign-ca.crt");
  // A time when every certificate of the test PKI is valid.
  SystemTime valid_at_ = leaf_.NotBefore() + 1h;
};

TEST_F(OpensslPkiTest, Accessors) {
  EXPECT_EQ(root_.Subject(), "CN=Test Root CA,O=Moat Test");
  EXPECT_EQ(root_.Issuer(), root_.Subject());
  EXPECT_EQ(root_.SubjectCommonName(), "Test Root CA");
  EXPECT_TRUE(root_.IsCa());
  EXPECT_FALSE(root_.HasExtendedKeyUsage(ExtendedKeyUsage::kClientAuth));  // no EKU at all

  EXPECT_EQ(intermediate_.Issuer(), root_.Subject());
  EXPECT_TRUE(intermediate_.IsCa());

  EXPECT_EQ(leaf_.Subject(), "CN=test-device");
  EXPECT_EQ(leaf_.SubjectCommonName(), "test-device");
  EXPECT_EQ(leaf_.Issuer(), "CN=Test Intermediate CA,O=Moat Test");
  EXPECT_FALSE(leaf_.IsCa());
  EXPECT_TRUE(leaf_.HasExtendedKeyUsage(ExtendedKeyUsage::kClientAuth));
  EXPECT_FALSE(leaf_.HasExtendedKeyUsage(ExtendedKeyUsage::kServerAuth));
  EXPECT_FALSE(leaf_.HasExtendedKeyUsage(ExtendedKeyUsage::kCodeSigning));
  EXPECT_THAT(leaf_.SanUris(), ElementsAre("urn:moat:device:" + std::string(64, '0')));
  EXPECT_THAT(leaf_.SanDnsNames(), IsEmpty());
  EXPECT_THAT(leaf_.SanIpAddresses(), IsEmpty());
  EXPECT_EQ(leaf_.NotAfter() - leaf_.NotBefore(), std::chrono::seconds(86400));  // -days 1
  EXPECT_TRUE(leaf_.public_key() == PkiKey("leaf.key").public_key());
  EXPECT_EQ(DeviceIdFromCertificate(leaf_).value(), std::string(64, '0'));
}

TEST_F(OpensslPkiTest, AccessorsAgreeWithOpenssl) {
  auto out =
      RunShell(fmt::format("openssl x509 -in {} -noout -serial -fingerprint -sha256 -dates "
                           "-dateopt iso_8601",
                           PkiFile("leaf.crt").string()));
  ASSERT_EQ(out.status, 0) << out.output;
  std::string serial = leaf_.SerialHex();
  for (char& c : serial) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_THAT(out.output, HasSubstr("serial=" + serial + "\n"));

  std::string fingerprint;
  for (uint8_t b : leaf_.Fingerprint()) {
    fingerprint += fmt::format("{}{:02X}", fingerprint.empty() ? "" : ":", b);
  }
  EXPECT_THAT(out.output, HasSubstr("sha256 Fingerprint=" + fingerprint));

  // "notBefore=2026-11-27 19:56:11Z" against our RFC 3339 form.
  std::string not_before = FormatRfc3339(leaf_.NotBefore());
  not_before[10] = ' ';
  EXPECT_THAT(out.output, HasSubstr("notBefore=" + not_before));
  std::string not_after = FormatRfc3339(leaf_.NotAfter());
  not_after[10] = ' ';
  EXPECT_THAT(out.output, HasSubstr("notAfter=" + not_after));
}

TEST_F(OpensslPkiTest, PemAndDerRoundTrip) {
  // Our PEM writer produces exactly what openssl wrote.
  EXPECT_EQ(leaf_.ToPem(), ReadPki("leaf.crt"));
  auto from_der = Certificate::FromDer(leaf_.ToDer());
  ASSERT_TRUE(from_der.has_value());
  EXPECT_TRUE(*from_der == leaf_);
  EXPECT_EQ(from_der->Fingerprint(), Sha256(leaf_.ToDer()));
  EXPECT_FALSE(leaf_ == root_);
}

TEST_F(OpensslPkiTest, ChainVerifies) {
  const std::vector<Certificate> intermediates = {intermediate_};
  const std::vector<Certificate> roots = {root_};
  auto result = VerifyCertificateChain(leaf_, intermediates, roots, valid_at_);
  EXPECT_TRUE(result.has_value()) << MessageOf(result);
  result =
      VerifyCertificateChain(leaf_, intermediates, roots, valid_at_, ExtendedKeyUsage::kClientAuth);
  EXPECT_TRUE(result.has_value()) << MessageOf(result);
  // Extra, unrelated roots and intermediates do not hurt.
  const std::vector<Certificate> more_roots = {foreign_, root_};
  const std::vector<Certificate> more_intermediates = {foreign_, intermediate_};
  result = VerifyCertificateChain(leaf_, more_intermediates, more_roots, valid_at_);
  EXPECT_TRUE(result.has_value()) << MessageOf(result);
  // The intermediate itself chains to the root.
  result = VerifyCertificateChain(intermediate_, {}, roots, valid_at_);
  EXPECT_TRUE(result.has_value()) << MessageOf(result);
}

TEST_F(OpensslPkiTest, ExpiredLeaf) {
  const std::vector<Certificate> intermediates = {intermediate_};
  const std::vector<Certificate> roots = {root_};
  auto result = VerifyCertificateChain(leaf_, intermediates, roots, leaf_.NotAfter() + 1s);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: certificate has expired (depth 0, CN=test-device)");
}

TEST_F(OpensslPkiTest, NotYetValid) {
  const std::vector<Certificate> intermediates = {intermediate_};
  const std::vector<Certificate> roots = {root_};
  // The script makes all certificates within a second or two, so which one OpenSSL reports
  // first depends on timing; IssueTest.NotYetValidLeaf pins the depth.
  auto result = VerifyCertificateChain(leaf_, intermediates, roots, leaf_.NotBefore() - 1h);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_THAT(MessageOf(result), HasSubstr("certificate chain: certificate is not yet valid"));
}

TEST_F(OpensslPkiTest, ForeignRoot) {
  const std::vector<Certificate> intermediates = {intermediate_};
  const std::vector<Certificate> roots = {foreign_};
  auto result = VerifyCertificateChain(leaf_, intermediates, roots, valid_at_);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: unable to get local issuer certificate (depth 1, "
            "CN=Test Intermediate CA,O=Moat Test)");
}

TEST_F(OpensslPkiTest, MissingIntermediate) {
  const std::vector<Certificate> roots = {root_};
  auto result = VerifyCertificateChain(leaf_, {}, roots, valid_at_);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: unable to get local issuer certificate (depth 0, CN=test-device)");
}

TEST_F(OpensslPkiTest, TrustingOnlyTheIntermediateIsNotEnough) {
  // No partial chains: a trust anchor must be a self-signed root.
  const std::vector<Certificate> roots = {intermediate_};
  auto result = VerifyCertificateChain(leaf_, {}, roots, valid_at_);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_THAT(MessageOf(result), HasSubstr("depth 1"));
}

TEST_F(OpensslPkiTest, WrongPurpose) {
  const std::vector<Certificate> intermediates = {intermediate_};
  const std::vector<Certificate> roots = {root_};
  auto result =
      VerifyCertificateChain(leaf_, intermediates, roots, valid_at_, ExtendedKeyUsage::kServerAuth);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: unsuitable certificate purpose (depth 0, CN=test-device)");
  result = VerifyCertificateChain(leaf_, intermediates, roots, valid_at_,
                                  ExtendedKeyUsage::kCodeSigning);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: leaf has no extendedKeyUsage codeSigning (depth 0, "
            "CN=test-device)");
}

TEST_F(OpensslPkiTest, NoRoots) {
  auto result = VerifyCertificateChain(leaf_, {}, {}, valid_at_);
  EXPECT_EQ(CodeOf(result), ErrorCode::kInvalidArgument);
}

TEST_F(OpensslPkiTest, LeafWithoutEkuFailsAnyPurpose) {
  // openssl would accept a leaf without extendedKeyUsage for clientAuth; we do not.
  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  const std::string ext = WriteTemp(*dir, "noeku.ext",
                                    "basicConstraints=critical,CA:FALSE\n"
                                    "keyUsage=critical,digitalSignature\n");
  const std::string crt = (dir->path() / "noeku.crt").string();
  auto made = RunShell(fmt::format(
      "openssl x509 -req -in {} -CA {} -CAkey {} -set_serial 7 -days 1 -sha256 -extfile {} "
      "-out {}",
      PkiFile("leaf.csr").string(), PkiFile("intermediate-ca.crt").string(),
      PkiFile("intermediate-ca.key").string(), ext, crt));
  ASSERT_EQ(made.status, 0) << made.output;
  auto cert = Certificate::FromPem(ReadFile(crt, 1 << 16).value_or(""));
  ASSERT_TRUE(cert.has_value()) << MessageOf(cert);
  const std::vector<Certificate> intermediates = {intermediate_};
  const std::vector<Certificate> roots = {root_};
  const SystemTime at = cert->NotBefore() + 1h;
  EXPECT_TRUE(VerifyCertificateChain(*cert, intermediates, roots, at).has_value());
  auto result =
      VerifyCertificateChain(*cert, intermediates, roots, at, ExtendedKeyUsage::kClientAuth);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_THAT(MessageOf(result), HasSubstr("leaf has no extendedKeyUsage clientAuth"));
}

TEST_F(OpensslPkiTest, OpensslCsrParsesAndVerifies) {
  auto csr = CertificateRequest::FromPem(ReadPki("leaf.csr"));
  ASSERT_TRUE(csr.has_value()) << MessageOf(csr);
  EXPECT_EQ(csr->SubjectCommonName(), "test-device");
  EXPECT_THAT(csr->SanUris(), IsEmpty());
  EXPECT_TRUE(csr->VerifySignature().has_value());
  EXPECT_TRUE(csr->public_key() == PkiKey("leaf.key").public_key());
}

TEST_F(OpensslPkiTest, ConcurrentUseOfSharedCertificates) {
  // Certificates are documented as safe to share between threads.
  const std::vector<Certificate> intermediates = {intermediate_};
  const std::vector<Certificate> roots = {root_};
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        Certificate copy = leaf_;
        if (!VerifyCertificateChain(copy, intermediates, roots, valid_at_,
                                    ExtendedKeyUsage::kClientAuth)) {
          ++failures;
        }
        if (copy.SanUris().size() != 1) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

// ---- Certificates we issue ----

TEST(IssueTest, ChainVerifiesWithUsAndWithOpenssl) {
  const OurChain chain = MakeChain();
  const std::vector<Certificate> intermediates = {chain.intermediate};
  const std::vector<Certificate> roots = {chain.root};
  auto result = VerifyCertificateChain(chain.leaf, intermediates, roots, kT0 + 1h,
                                       ExtendedKeyUsage::kClientAuth);
  EXPECT_TRUE(result.has_value()) << MessageOf(result);

  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  auto out = RunShell(fmt::format(
      "openssl verify -x509_strict -purpose sslclient -attime {} -CAfile {} -untrusted {} {}",
      EpochSeconds(kT0 + 1h), WriteTemp(*dir, "root.pem", chain.root.ToPem()),
      WriteTemp(*dir, "intermediate.pem", chain.intermediate.ToPem()),
      WriteTemp(*dir, "leaf.pem", chain.leaf.ToPem())));
  EXPECT_EQ(out.status, 0) << out.output;
  EXPECT_THAT(out.output, HasSubstr(": OK"));

  // openssl agrees that it is no server certificate and that it expires after 24 h.
  out = RunShell(fmt::format(
      "openssl verify -x509_strict -purpose sslserver -attime {} -CAfile {} -untrusted {} {}",
      EpochSeconds(kT0 + 1h), (dir->path() / "root.pem").string(),
      (dir->path() / "intermediate.pem").string(), (dir->path() / "leaf.pem").string()));
  EXPECT_NE(out.status, 0) << out.output;
  out = RunShell(fmt::format("openssl verify -attime {} -CAfile {} -untrusted {} {}",
                             EpochSeconds(kT0 + 24h + 1s), (dir->path() / "root.pem").string(),
                             (dir->path() / "intermediate.pem").string(),
                             (dir->path() / "leaf.pem").string()));
  EXPECT_NE(out.status, 0) << out.output;
  EXPECT_THAT(out.output, HasSubstr("certificate has expired"));
}

TEST(IssueTest, ClientCertificateFields) {
  const OurChain chain = MakeChain();
  const Certificate& leaf = chain.leaf;
  EXPECT_EQ(leaf.NotAfter() - leaf.NotBefore(), std::chrono::seconds(86400));
  EXPECT_EQ(leaf.NotBefore(), kT0);
  EXPECT_EQ(leaf.Subject(), "CN=" + kDeviceId);
  EXPECT_EQ(leaf.Issuer(), "CN=Tenant CA,O=Moat");
  EXPECT_EQ(leaf.Issuer(), chain.intermediate.Subject());
  EXPECT_THAT(leaf.SanUris(), ElementsAre("urn:moat:device:" + kDeviceId));
  EXPECT_EQ(DeviceIdFromCertificate(leaf).value(), kDeviceId);
  EXPECT_TRUE(leaf.public_key() == chain.leaf_key.public_key());
  EXPECT_FALSE(leaf.IsCa());
  EXPECT_TRUE(leaf.HasExtendedKeyUsage(ExtendedKeyUsage::kClientAuth));
  EXPECT_FALSE(leaf.HasExtendedKeyUsage(ExtendedKeyUsage::kServerAuth));

  X509* x = leaf.native();
  EXPECT_EQ(X509_get_version(x), X509_VERSION_3);
  EXPECT_EQ(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
  EXPECT_TRUE(ExtensionIsCritical(leaf, NID_basic_constraints));
  EXPECT_TRUE(ExtensionIsCritical(leaf, NID_key_usage));
  EXPECT_FALSE(ExtensionIsCritical(leaf, NID_ext_key_usage));
  EXPECT_FALSE(ExtensionIsCritical(leaf, NID_subject_alt_name));
  EXPECT_EQ(X509_get_key_usage(x), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_extended_key_usage(x), static_cast<uint32_t>(XKU_SSL_CLIENT));
  // SKI is present and AKI names the issuer's SKI.
  ASSERT_NE(X509_get0_subject_key_id(x), nullptr);
  ASSERT_NE(X509_get0_authority_key_id(x), nullptr);
  EXPECT_EQ(OctetBytes(X509_get0_authority_key_id(x)),
            OctetBytes(X509_get0_subject_key_id(chain.intermediate.native())));
  EXPECT_NE(OctetBytes(X509_get0_subject_key_id(x)),
            OctetBytes(X509_get0_subject_key_id(chain.intermediate.native())));
  // Until 2049 validity is UTCTime.
  EXPECT_EQ(ASN1_STRING_type(X509_get0_notAfter(x)), V_ASN1_UTCTIME);
}

TEST(IssueTest, CaCertificateFields) {
  const OurChain chain = MakeChain();
  for (const Certificate* ca : {&chain.root, &chain.intermediate}) {
    SCOPED_TRACE(ca->Subject());
    EXPECT_TRUE(ca->IsCa());
    EXPECT_TRUE(ExtensionIsCritical(*ca, NID_basic_constraints));
    EXPECT_TRUE(ExtensionIsCritical(*ca, NID_key_usage));
    EXPECT_EQ(X509_get_key_usage(ca->native()),
              static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    EXPECT_FALSE(HasExtension(*ca, NID_ext_key_usage));
    EXPECT_NE(X509_get0_subject_key_id(ca->native()), nullptr);
  }
  EXPECT_EQ(chain.root.Subject(), "CN=Moat Service Root,O=Moat");
  EXPECT_EQ(chain.root.Issuer(), chain.root.Subject());
  EXPECT_EQ(X509_get_pathlen(chain.root.native()), -1);  // no pathlen asked for
  EXPECT_EQ(X509_get_pathlen(chain.intermediate.native()), 0);
  // A self-signed root carries no authorityKeyIdentifier.
  EXPECT_FALSE(HasExtension(chain.root, NID_authority_key_identifier));
  EXPECT_TRUE(HasExtension(chain.intermediate, NID_authority_key_identifier));
}

TEST(IssueTest, NotYetValidLeaf) {
  const OurChain chain = MakeChain();
  const std::vector<Certificate> intermediates = {chain.intermediate};
  const std::vector<Certificate> roots = {chain.root};
  auto result = VerifyCertificateChain(chain.leaf, intermediates, roots, kT0 - 1s);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: certificate is not yet valid (depth 0, CN=" + kDeviceId + ")");
  EXPECT_TRUE(VerifyCertificateChain(chain.leaf, intermediates, roots, kT0).has_value());
  result = VerifyCertificateChain(chain.leaf, intermediates, roots, kT0 + 24h + 1s);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: certificate has expired (depth 0, CN=" + kDeviceId + ")");
}

TEST(IssueTest, ExpiredIntermediateIsReportedAtDepthOne) {
  const OurChain chain = MakeChain();
  // A leaf that outlives its issuer: valid itself, but the intermediate has expired.
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  const SystemTime at = chain.intermediate.NotAfter() + 1h;
  auto leaf = IssueCertificate(
      MakeProfile(CertificateProfile::Kind::kClient, "late", at - 24h * 400, at + 24h),
      key->public_key(), chain.intermediate, chain.intermediate_key);
  ASSERT_TRUE(leaf.has_value()) << MessageOf(leaf);
  const std::vector<Certificate> intermediates = {chain.intermediate};
  const std::vector<Certificate> roots = {chain.root};
  auto result = VerifyCertificateChain(*leaf, intermediates, roots, at);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: certificate has expired (depth 1, CN=Tenant CA,O=Moat)");
}

TEST(IssueTest, SerialsAreRandomPositiveAndAtMostSixteenBytes) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  std::set<std::string> serials;
  for (int i = 0; i < 8; ++i) {
    auto cert = SelfSignCertificate(MakeProfile(CertificateProfile::Kind::kRootCa, "Root"), *key);
    ASSERT_TRUE(cert.has_value()) << MessageOf(cert);
    const ASN1_INTEGER* serial = X509_get0_serialNumber(cert->native());
    EXPECT_EQ(ASN1_STRING_type(serial), V_ASN1_INTEGER);  // not negative
    EXPECT_LE(ASN1_STRING_length(serial), 16);
    EXPECT_GE(ASN1_STRING_length(serial), 8);  // 2^-64 chance of a false failure
    EXPECT_EQ(cert->SerialHex().size(), static_cast<size_t>(ASN1_STRING_length(serial)) * 2);
    serials.insert(cert->SerialHex());
  }
  EXPECT_EQ(serials.size(), 8u);
}

TEST(IssueTest, Ed25519ChainForCodeSigning) {
  const OurChain chain = MakeChain(KeyType::kEd25519);
  EXPECT_EQ(X509_get_signature_nid(chain.root.native()), NID_ED25519);
  EXPECT_EQ(chain.root.public_key().type(), KeyType::kEd25519);

  auto signer_key = PrivateKey::Generate(KeyType::kEd25519);
  ASSERT_TRUE(signer_key.has_value());
  auto signer =
      IssueCertificate(MakeProfile(CertificateProfile::Kind::kCodeSigning, "Image Signer"),
                       signer_key->public_key(), chain.intermediate, chain.intermediate_key);
  ASSERT_TRUE(signer.has_value()) << MessageOf(signer);
  EXPECT_EQ(X509_get_signature_nid(signer->native()), NID_ED25519);
  EXPECT_TRUE(signer->HasExtendedKeyUsage(ExtendedKeyUsage::kCodeSigning));
  EXPECT_EQ(X509_get_key_usage(signer->native()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_TRUE(ExtensionIsCritical(*signer, NID_basic_constraints));
  EXPECT_FALSE(signer->IsCa());

  const std::vector<Certificate> intermediates = {chain.intermediate};
  const std::vector<Certificate> roots = {chain.root};
  auto result =
      VerifyCertificateChain(*signer, intermediates, roots, kT0, ExtendedKeyUsage::kCodeSigning);
  EXPECT_TRUE(result.has_value()) << MessageOf(result);
  result =
      VerifyCertificateChain(*signer, intermediates, roots, kT0, ExtendedKeyUsage::kClientAuth);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_THAT(MessageOf(result), HasSubstr("unsuitable certificate purpose (depth 0"));

  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  auto out =
      RunShell(fmt::format("openssl verify -x509_strict -attime {} -CAfile {} -untrusted {} {}",
                           EpochSeconds(kT0), WriteTemp(*dir, "root.pem", chain.root.ToPem()),
                           WriteTemp(*dir, "ca.pem", chain.intermediate.ToPem()),
                           WriteTemp(*dir, "signer.pem", signer->ToPem())));
  EXPECT_EQ(out.status, 0) << out.output;
}

TEST(IssueTest, CodeSigningRefusedUnderCaRestrictedToOtherUsages) {
  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  // An intermediate (made by openssl) whose extendedKeyUsage allows serverAuth only.
  const std::string ext = WriteTemp(*dir, "ca.ext",
                                    "basicConstraints=critical,CA:TRUE\n"
                                    "keyUsage=critical,keyCertSign,cRLSign\n"
                                    "extendedKeyUsage=serverAuth\n"
                                    "subjectKeyIdentifier=hash\n"
                                    "authorityKeyIdentifier=keyid\n");
  const std::string key = (dir->path() / "ca.key").string();
  const std::string crt = (dir->path() / "ca.crt").string();
  auto made = RunShell(fmt::format(
      "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {0} && "
      "openssl req -new -key {0} -subj /CN=Web-Only-CA | "
      "openssl x509 -req -CA {1} -CAkey {2} -set_serial 9 -days 30 -sha256 -extfile {3} -out {4}",
      key, PkiFile("root-ca.crt").string(), PkiFile("root-ca.key").string(), ext, crt));
  ASSERT_EQ(made.status, 0) << made.output;
  auto ca = Certificate::FromPem(ReadFile(crt, 1 << 16).value_or(""));
  ASSERT_TRUE(ca.has_value()) << MessageOf(ca);
  auto ca_key = PrivateKey::FromPem(ReadFile(key, 1 << 16).value_or(""));
  ASSERT_TRUE(ca_key.has_value());

  auto signer_key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(signer_key.has_value());
  const SystemTime at = ca->NotBefore() + 1h;
  auto signer = IssueCertificate(
      MakeProfile(CertificateProfile::Kind::kCodeSigning, "Signer", at - 1min, at + 1h),
      signer_key->public_key(), *ca, *ca_key);
  ASSERT_TRUE(signer.has_value()) << MessageOf(signer);
  const std::vector<Certificate> intermediates = {*ca};
  const std::vector<Certificate> roots = {PkiCert("root-ca.crt")};
  EXPECT_TRUE(VerifyCertificateChain(*signer, intermediates, roots, at).has_value());
  auto result =
      VerifyCertificateChain(*signer, intermediates, roots, at, ExtendedKeyUsage::kCodeSigning);
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_EQ(MessageOf(result),
            "certificate chain: CA does not allow codeSigning (depth 1, CN=Web-Only-CA)");
}

TEST(IssueTest, ServerCertificateWithDnsAndIpNames) {
  const OurChain chain = MakeChain();
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  CertificateProfile profile = MakeProfile(CertificateProfile::Kind::kServer, "moat.example");
  profile.san_dns = {"moat.example", "*.devices.moat.example"};
  profile.san_ips = {"192.0.2.10", "2001:db8::1"};
  auto server =
      IssueCertificate(profile, key->public_key(), chain.intermediate, chain.intermediate_key);
  ASSERT_TRUE(server.has_value()) << MessageOf(server);
  EXPECT_THAT(server->SanDnsNames(), ElementsAre("moat.example", "*.devices.moat.example"));
  EXPECT_THAT(server->SanIpAddresses(), ElementsAre("192.0.2.10", "2001:db8::1"));
  EXPECT_THAT(server->SanUris(), IsEmpty());
  EXPECT_EQ(CodeOf(DeviceIdFromCertificate(*server)), ErrorCode::kNotFound);
  EXPECT_TRUE(server->HasExtendedKeyUsage(ExtendedKeyUsage::kServerAuth));
  EXPECT_FALSE(server->HasExtendedKeyUsage(ExtendedKeyUsage::kClientAuth));

  const std::vector<Certificate> intermediates = {chain.intermediate};
  const std::vector<Certificate> roots = {chain.root};
  EXPECT_TRUE(
      VerifyCertificateChain(*server, intermediates, roots, kT0, ExtendedKeyUsage::kServerAuth)
          .has_value());
  EXPECT_EQ(CodeOf(VerifyCertificateChain(*server, intermediates, roots, kT0,
                                          ExtendedKeyUsage::kClientAuth)),
            ErrorCode::kVerificationFailed);

  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  auto out = RunShell(fmt::format(
      "openssl verify -x509_strict -purpose sslserver -verify_hostname api.devices.moat.example "
      "-attime {} -CAfile {} -untrusted {} {}",
      EpochSeconds(kT0), WriteTemp(*dir, "root.pem", chain.root.ToPem()),
      WriteTemp(*dir, "ca.pem", chain.intermediate.ToPem()),
      WriteTemp(*dir, "server.pem", server->ToPem())));
  EXPECT_EQ(out.status, 0) << out.output;
  out = RunShell(
      fmt::format("openssl verify -purpose sslserver -verify_ip 192.0.2.10 -attime {} -CAfile {} "
                  "-untrusted {} {}",
                  EpochSeconds(kT0), (dir->path() / "root.pem").string(),
                  (dir->path() / "ca.pem").string(), (dir->path() / "server.pem").string()));
  EXPECT_EQ(out.status, 0) << out.output;
}

TEST(IssueTest, ValidityIsExactAndLateDatesUseGeneralizedTime) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  // Sub-second parts are dropped, keeping the stated length.
  const SystemTime start = Utc(2049, 12, 31) + 23h + 59min + 30s + 250ms;
  CertificateProfile profile =
      MakeProfile(CertificateProfile::Kind::kRootCa, "Long Root", start, Utc(2075, 6, 30) + 250ms);
  auto cert = SelfSignCertificate(profile, *key);
  ASSERT_TRUE(cert.has_value()) << MessageOf(cert);
  EXPECT_EQ(cert->NotBefore(), Utc(2049, 12, 31) + 23h + 59min + 30s);
  EXPECT_EQ(cert->NotAfter(), Utc(2075, 6, 30));
  EXPECT_EQ(ASN1_STRING_type(X509_get0_notBefore(cert->native())), V_ASN1_UTCTIME);
  EXPECT_EQ(ASN1_STRING_type(X509_get0_notAfter(cert->native())), V_ASN1_GENERALIZEDTIME);

  const std::vector<Certificate> roots = {*cert};
  EXPECT_TRUE(VerifyCertificateChain(*cert, {}, roots, Utc(2070, 1, 1)).has_value());
  EXPECT_EQ(CodeOf(VerifyCertificateChain(*cert, {}, roots, Utc(2075, 7, 1))),
            ErrorCode::kVerificationFailed);

  // Exactly 24 h.
  auto day = SelfSignCertificate(
      MakeProfile(CertificateProfile::Kind::kClient, "day", kT0 + 123ms, kT0 + 24h + 123ms), *key);
  ASSERT_TRUE(day.has_value());
  EXPECT_EQ(day->NotAfter() - day->NotBefore(), std::chrono::seconds(86400));
}

TEST(IssueTest, FarFutureNotAfterReadsAsMaxTime) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  auto cert = SelfSignCertificate(MakeProfile(CertificateProfile::Kind::kRootCa, "Forever"), *key);
  ASSERT_TRUE(cert.has_value());
  // RFC 5280's "no well-defined expiration date", as TPM EK certificates often use.
  const Certificate forever = Resign(*cert, *key, [](X509* x) {
    ASSERT_EQ(ASN1_TIME_set_string(X509_getm_notAfter(x), "99991231235959Z"), 1);
  });
  EXPECT_EQ(forever.NotAfter(), SystemTime::max());
  const std::vector<Certificate> roots = {forever};
  EXPECT_TRUE(VerifyCertificateChain(forever, {}, roots, Utc(2200, 1, 1)).has_value());
}

TEST(IssueTest, ProfileValidation) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  using Kind = CertificateProfile::Kind;
  const auto expect_invalid = [&](const CertificateProfile& profile, std::string_view fragment) {
    auto cert = SelfSignCertificate(profile, *key);
    ASSERT_EQ(CodeOf(cert), ErrorCode::kInvalidArgument) << fragment;
    EXPECT_THAT(MessageOf(cert), HasSubstr(std::string(fragment)));
  };
  expect_invalid(MakeProfile(Kind::kClient, ""), "common name is required");
  expect_invalid(MakeProfile(Kind::kClient, std::string(65, 'x')), "common name");
  expect_invalid(MakeProfile(Kind::kClient, "a\nb"), "common name");
  expect_invalid(MakeProfile(Kind::kClient, "c", kT0, kT0), "must be later than not_before");
  expect_invalid(MakeProfile(Kind::kClient, "c", kT0, kT0 - 1s), "must be later");

  CertificateProfile pathlen = MakeProfile(Kind::kClient, "c");
  pathlen.path_length = 0;
  expect_invalid(pathlen, "path_length is only for CA");
  pathlen.kind = Kind::kRootCa;
  pathlen.path_length = -1;
  expect_invalid(pathlen, "negative");

  CertificateProfile org = MakeProfile(Kind::kClient, "c");
  org.organization = std::string(65, 'o');
  expect_invalid(org, "organization");

  for (const std::string& uri :
       std::vector<std::string>{"no-scheme", "urn:with space", "1urn:x", ":x", "urn:", ""}) {
    CertificateProfile profile = MakeProfile(Kind::kClient, "c");
    profile.san_uris = {uri};
    expect_invalid(profile, "SAN URI");
  }
  for (const std::string& dns :
       std::vector<std::string>{"bad_name.example", "-x.example", "a..b", "", "x.example.",
                                "a.*.example", std::string(64, 'a') + ".example"}) {
    CertificateProfile profile = MakeProfile(Kind::kServer, "c");
    profile.san_dns = {dns};
    expect_invalid(profile, "SAN DNS name");
  }
  for (const std::string& ip :
       std::vector<std::string>{"300.1.1.1", "1.2.3", "example.com", "", "::g"}) {
    CertificateProfile profile = MakeProfile(Kind::kServer, "c");
    profile.san_ips = {ip};
    expect_invalid(profile, "SAN IP address");
  }
}

TEST(IssueTest, SanValuesCannotInjectOtherNames) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  CertificateProfile profile = MakeProfile(CertificateProfile::Kind::kClient, "c");
  // In OpenSSL's config syntax this would be two names; here it is one URI.
  profile.san_uris = {"urn:a,URI:urn:moat:device:" + kDeviceId};
  auto cert = SelfSignCertificate(profile, *key);
  ASSERT_TRUE(cert.has_value()) << MessageOf(cert);
  EXPECT_THAT(cert->SanUris(), ElementsAre("urn:a,URI:urn:moat:device:" + kDeviceId));
  EXPECT_EQ(CodeOf(DeviceIdFromCertificate(*cert)), ErrorCode::kNotFound);
}

TEST(IssueTest, IssuerChecks) {
  const OurChain chain = MakeChain();
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  const CertificateProfile client = MakeProfile(CertificateProfile::Kind::kClient, "c");

  // A leaf cannot issue.
  auto by_leaf = IssueCertificate(client, key->public_key(), chain.leaf, chain.leaf_key);
  ASSERT_EQ(CodeOf(by_leaf), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(by_leaf), HasSubstr("is not a CA certificate"));

  // The issuer key must belong to the issuer certificate.
  auto wrong_key = IssueCertificate(client, key->public_key(), chain.intermediate, chain.root_key);
  ASSERT_EQ(CodeOf(wrong_key), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(wrong_key), HasSubstr("does not belong to the issuer certificate"));

  // pathlen 0 forbids issuing another CA.
  auto sub_ca = IssueCertificate(MakeProfile(CertificateProfile::Kind::kIntermediateCa, "Sub"),
                                 key->public_key(), chain.intermediate, chain.intermediate_key);
  ASSERT_EQ(CodeOf(sub_ca), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(sub_ca), HasSubstr("pathlen 0"));
}

TEST(IssueTest, IssuedUnderOpensslMadeCa) {
  // Our issuer code with an openssl-made intermediate, verified by openssl.
  const Certificate root = PkiCert("root-ca.crt");
  const Certificate intermediate = PkiCert("intermediate-ca.crt");
  const PrivateKey intermediate_key = PkiKey("intermediate-ca.key");
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  const SystemTime at = intermediate.NotBefore() + 2h;
  CertificateProfile profile =
      MakeProfile(CertificateProfile::Kind::kClient, "device", at - 1h, at + 23h);
  profile.san_uris = {DeviceSanUri(kDeviceId)};
  auto leaf = IssueCertificate(profile, key->public_key(), intermediate, intermediate_key);
  ASSERT_TRUE(leaf.has_value()) << MessageOf(leaf);
  EXPECT_EQ(OctetBytes(X509_get0_authority_key_id(leaf->native())),
            OctetBytes(X509_get0_subject_key_id(intermediate.native())));
  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  auto out = RunShell(fmt::format(
      "openssl verify -x509_strict -purpose sslclient -attime {} -CAfile {} -untrusted {} {}",
      EpochSeconds(at), PkiFile("root-ca.crt").string(), PkiFile("intermediate-ca.crt").string(),
      WriteTemp(*dir, "leaf.pem", leaf->ToPem())));
  EXPECT_EQ(out.status, 0) << out.output;
  const std::vector<Certificate> intermediates = {intermediate};
  const std::vector<Certificate> roots = {root};
  EXPECT_TRUE(VerifyCertificateChain(*leaf, intermediates, roots, at, ExtendedKeyUsage::kClientAuth)
                  .has_value());
}

// ---- Parsing malformed input ----

class ParseTest : public ::testing::Test {
 protected:
  std::string leaf_pem_ = ReadPki("leaf.crt");
  std::string root_pem_ = ReadPki("root-ca.crt");
  std::vector<uint8_t> leaf_der_ = PkiCert("leaf.crt").ToDer();
};

TEST_F(ParseTest, PemErrors) {
  struct Case {
    std::string name;
    std::string pem;
    ErrorCode code;
    std::string fragment;
  };
  const std::string body = leaf_pem_.substr(leaf_pem_.find('\n') + 1);
  const std::vector<Case> cases = {
      {"empty", "", ErrorCode::kInvalidArgument, "no PEM 'CERTIFICATE' block"},
      {"text", "hello world\n", ErrorCode::kInvalidArgument, "no PEM 'CERTIFICATE' block"},
      {"two certificates", leaf_pem_ + root_pem_, ErrorCode::kInvalidArgument,
       "expected exactly one PEM block"},
      {"wrong label", ReadPki("leaf.key"), ErrorCode::kInvalidArgument,
       "certificate: PEM block 1 is 'PRIVATE KEY', not 'CERTIFICATE'"},
      {"bad base64", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
       ErrorCode::kInvalidArgument, "malformed PEM block 1"},
      {"no end line", leaf_pem_.substr(0, leaf_pem_.find("-----END")), ErrorCode::kInvalidArgument,
       "malformed PEM block 1"},
      {"encrypted headers",
       "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
       "00000000000000000000000000000000\n\n" +
           body,
       ErrorCode::kInvalidArgument, "has headers"},
      {"not DER inside", "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
       ErrorCode::kInvalidArgument, "certificate: invalid DER"},
      {"oversized", std::string(64 * 1024 + 1, 'A'), ErrorCode::kLimitExceeded,
       "exceeds the limit"},
  };
  for (const Case& c : cases) {
    auto cert = Certificate::FromPem(c.pem);
    ASSERT_FALSE(cert.has_value()) << c.name;
    EXPECT_EQ(cert.error().code(), c.code) << c.name << ": " << cert.error().message();
    EXPECT_THAT(cert.error().message(), HasSubstr(c.fragment)) << c.name;
  }
}

TEST_F(ParseTest, PrivateKeyInPlaceOfCertificateIsNotEchoed) {
  const std::string key_pem = ReadPki("leaf.key");
  auto cert = Certificate::FromPem(key_pem);
  ASSERT_FALSE(cert.has_value());
  const std::string secret_line = key_pem.substr(key_pem.find('\n') + 1, 20);
  EXPECT_THAT(cert.error().message(), Not(HasSubstr(secret_line)));
}

TEST_F(ParseTest, ExplanatoryTextAroundTheBlockIsAllowed) {
  auto text = RunShell(fmt::format("openssl x509 -in {} -text", PkiFile("leaf.crt").string()));
  ASSERT_EQ(text.status, 0);
  ASSERT_THAT(text.output, HasSubstr("Certificate:"));
  auto cert = Certificate::FromPem(text.output + "trailing words\n");
  ASSERT_TRUE(cert.has_value()) << MessageOf(cert);
  EXPECT_EQ(cert->ToDer(), leaf_der_);
}

TEST_F(ParseTest, DerErrors) {
  auto empty = Certificate::FromDer({});
  EXPECT_EQ(CodeOf(empty), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(empty), HasSubstr("empty DER"));

  std::vector<uint8_t> trailing = leaf_der_;
  trailing.push_back(0x00);
  auto with_trailing = Certificate::FromDer(trailing);
  EXPECT_EQ(CodeOf(with_trailing), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(with_trailing), HasSubstr("1 trailing bytes"));

  const std::vector<uint8_t> truncated(leaf_der_.begin(), leaf_der_.end() - 1);
  auto short_der = Certificate::FromDer(truncated);
  EXPECT_EQ(CodeOf(short_der), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(short_der), HasSubstr("certificate: invalid DER"));

  auto junk = Certificate::FromDer(std::vector<uint8_t>{0x30, 0x03, 0x02, 0x01, 0x01});
  EXPECT_EQ(CodeOf(junk), ErrorCode::kInvalidArgument);

  auto huge = Certificate::FromDer(std::vector<uint8_t>(64 * 1024 + 1, 0x30));
  EXPECT_EQ(CodeOf(huge), ErrorCode::kLimitExceeded);

  // A certificate for a key Moat does not use.
  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  const std::string p384 = (dir->path() / "p384.crt").string();
  auto made = RunShell(fmt::format(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout /dev/null "
      "-subj /CN=p384 -days 1 -out {}",
      p384));
  ASSERT_EQ(made.status, 0) << made.output;
  auto unsupported = Certificate::FromPem(ReadFile(p384, 1 << 16).value_or(""));
  EXPECT_EQ(CodeOf(unsupported), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(unsupported), HasSubstr("certificate 'CN=p384': unsupported EC curve"));
}

TEST_F(ParseTest, DuplicateExtensionsAreRejected) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  CertificateProfile profile = MakeProfile(CertificateProfile::Kind::kClient, "dup");
  profile.san_uris = {"urn:one"};
  auto cert = SelfSignCertificate(profile, *key);
  ASSERT_TRUE(cert.has_value());
  X509* copy = X509_dup(cert->native());
  X509_EXTENSION* san = X509_get_ext(copy, X509_get_ext_by_NID(copy, NID_subject_alt_name, -1));
  ASSERT_EQ(X509_add_ext(copy, san, -1), 1);  // a second subjectAltName
  ASSERT_GT(X509_sign(copy, key->native(), EVP_sha256()), 0);
  unsigned char* der = nullptr;
  const int len = i2d_X509(copy, &der);
  std::vector<uint8_t> bytes(der, der + len);
  OPENSSL_free(der);
  X509_free(copy);
  auto parsed = Certificate::FromDer(bytes);
  EXPECT_EQ(CodeOf(parsed), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(parsed), HasSubstr("malformed or duplicate extensions"));
}

TEST_F(ParseTest, PemChain) {
  const std::string chain_pem =
      ReadPki("leaf.crt") + ReadPki("intermediate-ca.crt") + ReadPki("root-ca.crt");
  auto chain = Certificate::ParsePemChain(chain_pem);
  ASSERT_TRUE(chain.has_value()) << MessageOf(chain);
  ASSERT_EQ(chain->size(), 3u);
  EXPECT_EQ((*chain)[0].SubjectCommonName(), "test-device");
  EXPECT_EQ((*chain)[1].SubjectCommonName(), "Test Intermediate CA");
  EXPECT_EQ((*chain)[2].SubjectCommonName(), "Test Root CA");

  auto single = Certificate::ParsePemChain(leaf_pem_);
  ASSERT_TRUE(single.has_value());
  EXPECT_EQ(single->size(), 1u);

  auto exactly_max = Certificate::ParsePemChain(chain_pem, 3);
  EXPECT_TRUE(exactly_max.has_value());
  auto too_many = Certificate::ParsePemChain(chain_pem, 2);
  EXPECT_EQ(CodeOf(too_many), ErrorCode::kLimitExceeded);
  EXPECT_THAT(MessageOf(too_many), HasSubstr("more than 2 certificates"));

  EXPECT_EQ(CodeOf(Certificate::ParsePemChain(chain_pem, 0)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(CodeOf(Certificate::ParsePemChain("")), ErrorCode::kInvalidArgument);
  EXPECT_EQ(CodeOf(Certificate::ParsePemChain(std::string(256 * 1024 + 1, 'A'))),
            ErrorCode::kLimitExceeded);

  auto with_key = Certificate::ParsePemChain(leaf_pem_ + ReadPki("leaf.key"));
  EXPECT_EQ(CodeOf(with_key), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(with_key),
              HasSubstr("certificate chain: PEM block 2 is 'PRIVATE KEY', not 'CERTIFICATE'"));

  auto bad_second = Certificate::ParsePemChain(
      leaf_pem_ + "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(CodeOf(bad_second), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(bad_second),
              HasSubstr("certificate chain: block 2: certificate: invalid DER"));
}

// ---- Certificate requests ----

std::string KeyTypeParamName(const ::testing::TestParamInfo<KeyType>& param_info) {
  return param_info.param == KeyType::kEcdsaP256 ? "P256" : "Ed25519";
}

class CsrTest : public ::testing::TestWithParam<KeyType> {};

INSTANTIATE_TEST_SUITE_P(BothTypes, CsrTest,
                         ::testing::Values(KeyType::kEcdsaP256, KeyType::kEd25519),
                         KeyTypeParamName);

TEST_P(CsrTest, CreateRoundTripAndVerify) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  const std::vector<std::string> sans = {DeviceSanUri(kDeviceId)};
  auto csr = CertificateRequest::Create(*key, kDeviceId, sans);
  ASSERT_TRUE(csr.has_value()) << MessageOf(csr);
  EXPECT_EQ(csr->SubjectCommonName(), kDeviceId);
  EXPECT_THAT(csr->SanUris(), ElementsAre(DeviceSanUri(kDeviceId)));
  EXPECT_TRUE(csr->public_key() == key->public_key());
  EXPECT_TRUE(csr->VerifySignature().has_value());
  EXPECT_EQ(X509_REQ_get_signature_nid(csr->native()),
            GetParam() == KeyType::kEcdsaP256 ? NID_ecdsa_with_SHA256 : NID_ED25519);

  const std::string pem = csr->ToPem();
  EXPECT_TRUE(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
  auto from_pem = CertificateRequest::FromPem(pem);
  ASSERT_TRUE(from_pem.has_value()) << MessageOf(from_pem);
  EXPECT_EQ(from_pem->ToDer(), csr->ToDer());
  EXPECT_TRUE(from_pem->VerifySignature().has_value());
  EXPECT_THAT(from_pem->SanUris(), ElementsAre(DeviceSanUri(kDeviceId)));

  // openssl checks the self-signature and sees the SAN.
  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  auto out = RunShell(
      fmt::format("openssl req -in {} -noout -verify -text", WriteTemp(*dir, "req.pem", pem)));
  EXPECT_EQ(out.status, 0) << out.output;
  EXPECT_THAT(out.output, HasSubstr("verify OK"));
  EXPECT_THAT(out.output, HasSubstr("URI:" + DeviceSanUri(kDeviceId)));
}

TEST_P(CsrTest, TamperedRequestFailsVerification) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  auto csr = CertificateRequest::Create(*key, "device-name");
  ASSERT_TRUE(csr.has_value()) << MessageOf(csr);
  EXPECT_THAT(csr->SanUris(), IsEmpty());

  // Change the subject in the signed part: still parses, no longer verifies.
  std::vector<uint8_t> der = csr->ToDer();
  const std::string_view name = "device-name";
  auto at = std::search(der.begin(), der.end(), name.begin(), name.end());
  ASSERT_NE(at, der.end());
  *at = 'D';
  auto tampered = CertificateRequest::FromDer(der);
  ASSERT_TRUE(tampered.has_value()) << MessageOf(tampered);
  EXPECT_EQ(tampered->SubjectCommonName(), "Device-name");
  auto result = tampered->VerifySignature();
  ASSERT_EQ(CodeOf(result), ErrorCode::kVerificationFailed);
  EXPECT_THAT(MessageOf(result), HasSubstr("'Device-name': signature does not verify"));

  // Flip a bit of the signature (the last byte of the DER).
  der = csr->ToDer();
  der.back() ^= 0x01;
  auto bad_signature = CertificateRequest::FromDer(der);
  ASSERT_TRUE(bad_signature.has_value());
  EXPECT_EQ(CodeOf(bad_signature->VerifySignature()), ErrorCode::kVerificationFailed);
}

TEST(CsrSignerTest, ExternalSignerMustUseTheStatedKey) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  auto other = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key && other);
  int calls = 0;
  auto csr = CertificateRequest::Create(
      key->public_key(),
      [&](std::span<const uint8_t> message) {
        ++calls;
        return key->Sign(message);
      },
      "tpm-device");
  ASSERT_TRUE(csr.has_value()) << MessageOf(csr);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(csr->VerifySignature().has_value());

  auto mismatched = CertificateRequest::Create(
      key->public_key(), [&](std::span<const uint8_t> message) { return other->Sign(message); },
      "tpm-device");
  EXPECT_EQ(CodeOf(mismatched), ErrorCode::kVerificationFailed);
  EXPECT_THAT(MessageOf(mismatched), HasSubstr("did not sign with the given public key"));

  auto failing = CertificateRequest::Create(
      key->public_key(),
      [](std::span<const uint8_t>) -> Result<std::vector<uint8_t>> {
        return Fail(ErrorCode::kUnavailable, "TPM busy");
      },
      "tpm-device");
  EXPECT_EQ(CodeOf(failing), ErrorCode::kUnavailable);
  EXPECT_THAT(MessageOf(failing), HasSubstr("certificate request: signing: TPM busy"));
}

TEST(CsrParseTest, InvalidInputs) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(CodeOf(CertificateRequest::Create(*key, "")), ErrorCode::kInvalidArgument);
  const std::vector<std::string> bad_sans = {"not a uri"};
  EXPECT_EQ(CodeOf(CertificateRequest::Create(*key, "x", bad_sans)), ErrorCode::kInvalidArgument);

  auto csr = CertificateRequest::Create(*key, "x");
  ASSERT_TRUE(csr.has_value());
  std::vector<uint8_t> der = csr->ToDer();

  EXPECT_EQ(CodeOf(CertificateRequest::FromDer({})), ErrorCode::kInvalidArgument);
  std::vector<uint8_t> trailing = der;
  trailing.push_back(0);
  auto with_trailing = CertificateRequest::FromDer(trailing);
  EXPECT_EQ(CodeOf(with_trailing), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(with_trailing), HasSubstr("trailing bytes"));
  auto truncated = CertificateRequest::FromDer(std::vector<uint8_t>(der.begin(), der.end() - 3));
  EXPECT_EQ(CodeOf(truncated), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(truncated), HasSubstr("certificate request: invalid DER"));
  EXPECT_EQ(CodeOf(CertificateRequest::FromDer(std::vector<uint8_t>(64 * 1024 + 1, 0))),
            ErrorCode::kLimitExceeded);

  EXPECT_EQ(CodeOf(CertificateRequest::FromPem("")), ErrorCode::kInvalidArgument);
  EXPECT_EQ(CodeOf(CertificateRequest::FromPem(std::string(64 * 1024 + 1, 'A'))),
            ErrorCode::kLimitExceeded);
  auto certificate_pem = CertificateRequest::FromPem(ReadPki("leaf.crt"));
  EXPECT_EQ(CodeOf(certificate_pem), ErrorCode::kInvalidArgument);
  EXPECT_THAT(
      MessageOf(certificate_pem),
      HasSubstr("certificate request: PEM block 1 is 'CERTIFICATE', not 'CERTIFICATE REQUEST'"));
  auto two = CertificateRequest::FromPem(csr->ToPem() + csr->ToPem());
  EXPECT_EQ(CodeOf(two), ErrorCode::kInvalidArgument);

  // The legacy "NEW CERTIFICATE REQUEST" label is accepted.
  std::string legacy = csr->ToPem();
  legacy.replace(legacy.find("BEGIN "), 6, "BEGIN NEW ");
  legacy.replace(legacy.find("END "), 4, "END NEW ");
  auto from_legacy = CertificateRequest::FromPem(legacy);
  ASSERT_TRUE(from_legacy.has_value()) << MessageOf(from_legacy);
  EXPECT_EQ(from_legacy->ToDer(), der);
}

TEST(CsrIssueTest, CertificateFromRequest) {
  const OurChain chain = MakeChain();
  auto device_key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(device_key.has_value());
  const std::vector<std::string> sans = {DeviceSanUri(kDeviceId)};
  auto csr = CertificateRequest::Create(*device_key, kDeviceId, sans);
  ASSERT_TRUE(csr.has_value());
  auto received = CertificateRequest::FromPem(csr->ToPem());
  ASSERT_TRUE(received.has_value());
  ASSERT_TRUE(received->VerifySignature().has_value());

  CertificateProfile profile =
      MakeProfile(CertificateProfile::Kind::kClient, received->SubjectCommonName(), kT0, kT0 + 24h);
  profile.san_uris = received->SanUris();
  auto cert =
      IssueCertificate(profile, received->public_key(), chain.intermediate, chain.intermediate_key);
  ASSERT_TRUE(cert.has_value()) << MessageOf(cert);
  EXPECT_EQ(DeviceIdFromCertificate(*cert).value(), kDeviceId);
  EXPECT_TRUE(cert->public_key() == device_key->public_key());
}

// ---- Device identity ----

TEST(DeviceIdTest, SanConvention) {
  EXPECT_EQ(DeviceSanUri(kDeviceId), "urn:moat:device:" + kDeviceId);
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(DeviceSanUri(key->public_key().FingerprintHex()).size(), 16u + 64u);
}

TEST(DeviceIdTest, FromCertificate) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  const std::string id = key->public_key().FingerprintHex();
  const auto with_uris = [&](std::vector<std::string> uris) {
    CertificateProfile profile = MakeProfile(CertificateProfile::Kind::kClient, "device");
    profile.san_uris = std::move(uris);
    auto cert = SelfSignCertificate(profile, *key);
    EXPECT_TRUE(cert.has_value()) << MessageOf(cert);
    return *cert;
  };

  EXPECT_EQ(DeviceIdFromCertificate(with_uris({DeviceSanUri(id)})).value(), id);
  // Other URIs beside the device's are fine.
  EXPECT_EQ(DeviceIdFromCertificate(with_uris({"spiffe://moat/x", DeviceSanUri(id), "urn:other"}))
                .value(),
            id);

  auto none = DeviceIdFromCertificate(with_uris({"urn:other"}));
  EXPECT_EQ(CodeOf(none), ErrorCode::kNotFound);
  EXPECT_THAT(MessageOf(none), HasSubstr("has no urn:moat:device: subjectAltName"));

  auto two = DeviceIdFromCertificate(with_uris({DeviceSanUri(id), DeviceSanUri(kDeviceId)}));
  EXPECT_EQ(CodeOf(two), ErrorCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(two), HasSubstr("more than one device"));

  // A differently-cased second name still counts as a second device name.
  auto cased = DeviceIdFromCertificate(
      with_uris({DeviceSanUri(id), "URN:MOAT:DEVICE:" + std::string(64, 'b')}));
  EXPECT_EQ(CodeOf(cased), ErrorCode::kInvalidArgument);

  std::string upper = id;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const std::string& bad :
       {"urn:moat:device:" + upper, "urn:moat:device:" + id.substr(1),
        "urn:moat:device:" + id + "0", "urn:moat:device:" + id.substr(1) + "g",
        "URN:moat:device:" + id, std::string("urn:moat:device:")}) {
    SCOPED_TRACE(bad);
    auto result = DeviceIdFromCertificate(with_uris({bad}));
    EXPECT_EQ(CodeOf(result), ErrorCode::kInvalidArgument);
    EXPECT_THAT(MessageOf(result), HasSubstr("64 lowercase hex digits"));
  }
}

// ---- PKCS#7 ----

TEST(Pkcs7Test, CertsOnlyBundleMatchesOpenssl) {
  const Certificate root = PkiCert("root-ca.crt");
  const Certificate intermediate = PkiCert("intermediate-ca.crt");
  const std::vector<Certificate> certs = {intermediate, root};
  auto der = CertificatesToPkcs7Der(certs);
  ASSERT_TRUE(der.has_value()) << MessageOf(der);

  auto dir = TempDir::Create("x509-test");
  ASSERT_TRUE(dir.has_value());
  const std::string ours = WriteTemp(*dir, "ours.p7b", *der);
  auto printed =
      RunShell(fmt::format("openssl pkcs7 -inform DER -in {} -print_certs -noout", ours));
  ASSERT_EQ(printed.status, 0) << printed.output;
  EXPECT_THAT(printed.output, HasSubstr("subject=O = Moat Test, CN = Test Intermediate CA"));
  EXPECT_THAT(printed.output, HasSubstr("subject=O = Moat Test, CN = Test Root CA"));
  EXPECT_LT(printed.output.find("Intermediate"), printed.output.find("Root CA"));

  // Byte for byte what `openssl crl2pkcs7 -nocrl` makes.
  const std::string theirs = (dir->path() / "theirs.p7b").string();
  auto made = RunShell(fmt::format(
      "openssl crl2pkcs7 -nocrl -certfile {} -certfile {} -outform DER "
      "-out {}",
      PkiFile("intermediate-ca.crt").string(), PkiFile("root-ca.crt").string(), theirs));
  ASSERT_EQ(made.status, 0) << made.output;
  EXPECT_EQ(*der, ReadFileBytes(theirs, 1 << 20).value_or(std::vector<uint8_t>{}));

  EXPECT_EQ(CodeOf(CertificatesToPkcs7Der({})), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace moat::crypto

namespace moat::crypto {
namespace {

TEST(DeviceCertificateTest, UpdateCertificateCarriesOnlyTheMoatUsage) {
  auto root_key = PrivateKey::Generate(KeyType::kEcdsaP256);
  auto now = std::chrono::system_clock::now();
  CertificateProfile rp{.kind = CertificateProfile::Kind::kRootCa,
                        .common_name = "Root",
                        .not_before = now - std::chrono::hours(1),
                        .not_after = now + std::chrono::hours(48)};
  auto root = SelfSignCertificate(rp, *root_key);
  ASSERT_TRUE(root.has_value());
  auto device_key = PrivateKey::Generate(KeyType::kEcdsaP256);
  CertificateProfile p{.kind = CertificateProfile::Kind::kDeviceUpdate,
                       .common_name = "device",
                       .not_before = now - std::chrono::hours(1),
                       .not_after = now + std::chrono::hours(24)};
  auto cert = IssueCertificate(p, device_key->public_key(), *root, *root_key);
  ASSERT_TRUE(cert.has_value()) << cert.error().message();
  EXPECT_TRUE(cert->HasExtendedKeyUsage(ExtendedKeyUsage::kMoatDeviceUpdate));
  EXPECT_FALSE(cert->HasExtendedKeyUsage(ExtendedKeyUsage::kClientAuth));
  EXPECT_FALSE(cert->IsCa());
  const Certificate roots[] = {*root};
  EXPECT_TRUE(VerifyCertificateChain(*cert, {}, roots, now, ExtendedKeyUsage::kMoatDeviceUpdate));
  // A relying party asking for clientAuth (an MQTT broker) refuses it.
  EXPECT_FALSE(VerifyCertificateChain(*cert, {}, roots, now, ExtendedKeyUsage::kClientAuth));
  EXPECT_EQ(ExtendedKeyUsageName(ExtendedKeyUsage::kMoatDeviceUpdate), "moatDeviceUpdate");
}

TEST(DeviceCertificateTest, SelfCertifiedCertificateNamesItsOwnKey) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  auto now = std::chrono::system_clock::now();
  auto cert = SelfCertifiedDeviceCertificate(*key, now, now + std::chrono::hours(1));
  ASSERT_TRUE(cert.has_value()) << cert.error().message();
  EXPECT_TRUE(IsSelfCertifiedDeviceCertificate(*cert));
  auto id = DeviceIdFromCertificate(*cert);
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(*id, key->public_key().FingerprintHex());

  // Ed25519 keys are not device identities.
  auto ed = PrivateKey::Generate(KeyType::kEd25519);
  EXPECT_FALSE(SelfCertifiedDeviceCertificate(*ed, now, now + std::chrono::hours(1)));

  // Issued by someone else, even with the right SAN: not self-certified.
  auto root_key = PrivateKey::Generate(KeyType::kEcdsaP256);
  CertificateProfile rp{.kind = CertificateProfile::Kind::kRootCa,
                        .common_name = key->public_key().FingerprintHex(),
                        .not_before = now - std::chrono::hours(1),
                        .not_after = now + std::chrono::hours(48)};
  auto root = SelfSignCertificate(rp, *root_key);
  ASSERT_TRUE(root.has_value());
  CertificateProfile p{.kind = CertificateProfile::Kind::kClient,
                       .common_name = key->public_key().FingerprintHex(),
                       .not_before = now,
                       .not_after = now + std::chrono::hours(1),
                       .san_uris = {DeviceSanUri(key->public_key().FingerprintHex())}};
  auto issued = IssueCertificate(p, key->public_key(), *root, *root_key);
  ASSERT_TRUE(issued.has_value());
  EXPECT_FALSE(IsSelfCertifiedDeviceCertificate(*issued));
  // Self-signed with an extra SAN: refused (it must assert nothing else).
  p.san_dns = {"example.com"};
  auto extra = SelfSignCertificate(p, *key);
  ASSERT_TRUE(extra.has_value());
  EXPECT_FALSE(IsSelfCertifiedDeviceCertificate(*extra));
  // A self-signed root is not one either.
  EXPECT_FALSE(IsSelfCertifiedDeviceCertificate(*root));
}

}  // namespace
}  // namespace moat::crypto
