#include "support/pki.h"

#include <gtest/gtest.h>

#include <chrono>

#include "core/file.h"

namespace moat::test_support {

using crypto::CertificateProfile;
using namespace std::chrono_literals;

std::filesystem::path TestPkiFile(std::string_view name) {
  return std::filesystem::path(MOAT_BINARY_DIR) / "test-pki" / name;
}

std::string ReadTestPki(std::string_view name) {
  auto text = ReadFile(TestPkiFile(name), 1 << 20);
  EXPECT_TRUE(text.has_value()) << "missing test PKI (run tests/pki/make-test-pki.sh): " << name;
  return text.value_or("");
}

crypto::PrivateKey NewKey() {
  auto key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  EXPECT_TRUE(key.has_value());
  return *key;
}

CertificateProfile Profile(CertificateProfile::Kind kind, std::string cn) {
  CertificateProfile p;
  p.kind = kind;
  p.common_name = std::move(cn);
  p.not_before = std::chrono::system_clock::now() - 1h;
  p.not_after = std::chrono::system_clock::now() + 24h;
  return p;
}

Issued Root(std::string cn) {
  crypto::PrivateKey key = NewKey();
  auto cert =
      crypto::SelfSignCertificate(Profile(CertificateProfile::Kind::kRootCa, std::move(cn)), key);
  EXPECT_TRUE(cert.has_value()) << cert.error().message();
  return {key, *cert};
}

Issued Issue(const Issued& issuer, const CertificateProfile& profile) {
  crypto::PrivateKey key = NewKey();
  auto cert = crypto::IssueCertificate(profile, key.public_key(), issuer.cert, issuer.key);
  EXPECT_TRUE(cert.has_value()) << cert.error().message();
  return {key, *cert};
}

Issued Client(const Issued& issuer, std::string cn, std::vector<std::string> uris) {
  auto p = Profile(CertificateProfile::Kind::kClient, std::move(cn));
  p.san_uris = std::move(uris);
  return Issue(issuer, p);
}

}  // namespace moat::test_support
