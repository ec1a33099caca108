// formats/tpm2: TPM2_Certify verification against hand-built TPM structures (the key stores'
// tests check the same code against a real TPM's output, src/rot/tpm2_key_store_test.cc).
#include "formats/tpm2.h"

#include <gtest/gtest.h>

#include "core/encoding.h"
#include "crypto/key.h"
#include "crypto/tpm_primitives.h"
#include "formats/byte_io.h"

namespace moat::formats {
namespace {

// What the key store's TLS key template gives: fixedTPM | fixedParent | sensitiveDataOrigin |
// userWithAuth | sign.
constexpr uint32_t kTpmKeyAttributes = 0x00040072;
// A key made outside the TPM and imported (TPM2_Import): duplicable, so neither fixedTPM nor
// fixedParent, and not sensitiveDataOrigin.
constexpr uint32_t kImportedKeyAttributes = 0x00040040;

void PutTpm2b(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  PutU16(out, static_cast<uint16_t>(bytes.size()));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// TPM2B_PUBLIC of an ECC P-256 key with `attributes` and the point of `key`.
std::vector<uint8_t> EccTpm2bPublic(const crypto::PublicKey& key, uint32_t attributes) {
  const std::vector<uint8_t> raw = key.ToRaw();  // 0x04 || x || y
  std::vector<uint8_t> t;
  PutU16(t, kTpmAlgEcc);
  PutU16(t, kTpmAlgSha256);
  PutU32(t, attributes);
  PutU16(t, 0);       // no auth policy
  PutU16(t, 0x0010);  // symmetric: NULL
  PutU16(t, 0x0010);  // scheme: NULL
  PutU16(t, 0x0003);  // NIST P-256
  PutU16(t, 0x0010);  // KDF: NULL
  PutTpm2b(t, std::span(raw).subspan(1, 32));
  PutTpm2b(t, std::span(raw).subspan(33, 32));
  std::vector<uint8_t> out;
  PutTpm2b(out, t);
  return out;
}

// TPMS_ATTEST of type `type` (0x8017 certify) naming `name`.
std::vector<uint8_t> CertifyAttest(std::span<const uint8_t> name,
                                   std::span<const uint8_t> extra_data, uint16_t type = 0x8017) {
  std::vector<uint8_t> a;
  PutU32(a, 0xff544347);  // TPM_GENERATED_VALUE
  PutU16(a, type);
  const std::vector<uint8_t> signer(34, 0x11);
  PutTpm2b(a, signer);
  PutTpm2b(a, extra_data);
  for (int i = 0; i < 8; ++i) a.push_back(0);  // clock
  PutU32(a, 1);                                // reset count
  PutU32(a, 0);                                // restart count
  a.push_back(1);                              // safe
  for (int i = 0; i < 8; ++i) a.push_back(0);  // firmware version
  PutTpm2b(a, name);
  const std::vector<uint8_t> qualified(34, 0x22);
  PutTpm2b(a, qualified);
  return a;
}

class Tpm2CertifyTest : public ::testing::Test {
 protected:
  // A certify of `tls_` as the AK makes it, with knobs to get it wrong.
  Tpm2Certify Make(uint32_t attributes = kTpmKeyAttributes,
                   std::optional<std::vector<uint8_t>> extra_data = std::nullopt,
                   const crypto::PrivateKey* signer = nullptr) {
    Tpm2Certify c;
    c.key_tpm_public = EccTpm2bPublic(tls_.public_key(), attributes);
    const std::vector<uint8_t> name = TpmName(*ParseTpm2bPublic(c.key_tpm_public));
    c.attest = CertifyAttest(name, extra_data.value_or(CertifyQualifyingData(nonce_)));
    c.signature = *(signer ? signer : &ak_)->Sign(c.attest);
    return c;
  }

  Result<void> Verify(const Tpm2Certify& c) {
    return VerifyTpm2Certify(c, ak_.public_key(), nonce_, tls_.public_key());
  }

  static std::string Message(const Result<void>& r) { return r ? "" : r.error().message(); }

  crypto::PrivateKey ak_ = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  crypto::PrivateKey tls_ = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  std::vector<uint8_t> nonce_ = std::vector<uint8_t>(32, 0x42);
};

TEST_F(Tpm2CertifyTest, AGoodCertifyVerifies) {
  const Tpm2Certify c = Make();
  EXPECT_TRUE(Verify(c)) << Message(Verify(c));
  auto info = ParseCertifyAttest(c.attest);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->name, TpmName(*ParseTpm2bPublic(c.key_tpm_public)));
  EXPECT_EQ(info->extra_data, CertifyQualifyingData(nonce_));
}

TEST_F(Tpm2CertifyTest, QualifyingDataIsTheNonceAndTheLabel) {
  std::vector<uint8_t> input = nonce_;
  for (char ch : std::string_view("moat-certify")) input.push_back(static_cast<uint8_t>(ch));
  const auto digest = crypto::Sha256(input);
  EXPECT_EQ(CertifyQualifyingData(nonce_), std::vector<uint8_t>(digest.begin(), digest.end()));
}

TEST_F(Tpm2CertifyTest, AnotherSignerIsRefused) {
  const auto other = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto r = Verify(Make(kTpmKeyAttributes, std::nullopt, &other));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_NE(Message(r).find("not the attestation key's"), std::string::npos) << Message(r);
}

TEST_F(Tpm2CertifyTest, AnotherNonceIsRefused) {
  const std::vector<uint8_t> old_nonce(32, 0x41);
  auto r = Verify(Make(kTpmKeyAttributes, CertifyQualifyingData(old_nonce)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_NE(Message(r).find("qualifying data"), std::string::npos) << Message(r);
  // The quote's qualifying data is no certify's.
  const auto digest = crypto::Sha256(nonce_);
  EXPECT_FALSE(Verify(Make(kTpmKeyAttributes, std::vector<uint8_t>(digest.begin(), digest.end()))));
}

// The TPM certified one key; the public area sent is another (with the CSR's point): the names
// differ.
TEST_F(Tpm2CertifyTest, APublicAreaThatIsNotTheCertifiedKeyIsRefused) {
  Tpm2Certify c = Make();
  const auto in_tpm = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  const std::vector<uint8_t> tpm_name =
      TpmName(*ParseTpm2bPublic(EccTpm2bPublic(in_tpm.public_key(), kTpmKeyAttributes)));
  c.attest = CertifyAttest(tpm_name, CertifyQualifyingData(nonce_));
  c.signature = *ak_.Sign(c.attest);
  auto r = Verify(c);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_NE(Message(r).find("names differ"), std::string::npos) << Message(r);
  // The same trick on the attributes alone: the name covers them.
  Tpm2Certify flipped = Make(kImportedKeyAttributes);
  flipped.key_tpm_public = EccTpm2bPublic(tls_.public_key(), kTpmKeyAttributes);
  EXPECT_NE(Message(Verify(flipped)).find("names differ"), std::string::npos);
}

TEST_F(Tpm2CertifyTest, KeysThatExistedOutsideTheTpmOrAreNotTlsKeysAreRefused) {
  struct Case {
    const char* what;
    uint32_t attributes;
  };
  for (const Case& k :
       {Case{"imported (not fixedTPM/fixedParent/sensitiveDataOrigin)", kImportedKeyAttributes},
        Case{"no fixedTPM", kTpmKeyAttributes & ~kTpmaFixedTpm},
        Case{"no fixedParent", kTpmKeyAttributes & ~kTpmaFixedParent},
        Case{"no sensitiveDataOrigin", kTpmKeyAttributes & ~kTpmaSensitiveDataOrigin},
        Case{"not a signing key", (kTpmKeyAttributes & ~kTpmaSign) | kTpmaDecrypt},
        Case{"sign and decrypt", kTpmKeyAttributes | kTpmaDecrypt},
        Case{"restricted (an AK)", kTpmKeyAttributes | kTpmaRestricted}}) {
    SCOPED_TRACE(k.what);
    auto r = Verify(Make(k.attributes));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
    EXPECT_NE(Message(r).find("attributes"), std::string::npos) << Message(r);
  }
}

TEST_F(Tpm2CertifyTest, ACertifiedKeyThatIsNotTheCsrsIsRefused) {
  const auto csr_key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto r = VerifyTpm2Certify(Make(), ak_.public_key(), nonce_, csr_key.public_key());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_NE(Message(r).find("certificate request"), std::string::npos) << Message(r);
}

TEST_F(Tpm2CertifyTest, AQuoteOrForeignStructureIsNotACertify) {
  Tpm2Certify c = Make();
  c.attest = CertifyAttest(TpmName(*ParseTpm2bPublic(c.key_tpm_public)),
                           CertifyQualifyingData(nonce_), /*type=*/0x8018);
  c.signature = *ak_.Sign(c.attest);
  auto r = Verify(c);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_NE(Message(r).find("not a TPM-generated certify"), std::string::npos) << Message(r);
  // Truncated and padded structures are malformed.
  Tpm2Certify good = Make();
  std::vector<uint8_t> attest = good.attest;
  attest.push_back(0);
  EXPECT_EQ(ParseCertifyAttest(attest).error().code(), ErrorCode::kInvalidArgument);
  attest.resize(attest.size() - 10);
  EXPECT_EQ(ParseCertifyAttest(attest).error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(Tpm2CertifyTest, TheCertifyTravelsInTheQuotesJson) {
  Tpm2Quote q;
  q.attest = {1};
  q.signature = {2};
  q.ak_public = {3};
  q.ak_tpm_public = {4};
  q.pcrs = {0, 13};
  q.pcr_values[0] = crypto::Sha256(std::string_view("a"));
  q.pcr_values[13] = crypto::Sha256(std::string_view("b"));
  q.certify = Make();
  Json j = ToJson(q);
  ASSERT_TRUE(j.contains("certify"));
  auto back = Tpm2QuoteFromJson(*ParseJson(DumpJson(j), "q"), "q");
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_EQ(*back, q);
  // Without it (what the service refuses for a TPM device, but the format allows).
  q.certify.reset();
  EXPECT_FALSE(ToJson(q).contains("certify"));
  EXPECT_EQ(*Tpm2QuoteFromJson(ToJson(q), "q"), q);
  // Strict: unknown members and missing ones are refused, naming the path.
  Json extra = j;
  extra["certify"]["comment"] = "x";
  auto e = Tpm2QuoteFromJson(extra, "q");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("q.certify"), std::string::npos) << e.error().message();
  Json missing = j;
  missing["certify"].erase("attest");
  auto m = Tpm2QuoteFromJson(missing, "q");
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("attest"), std::string::npos) << m.error().message();
}

// The ECC P-256 EK (template L-2) and its credential; the TPM's side of both is checked against
// swtpm in src/rot/tpm2_key_store_test.cc.
TEST(Tpm2EccEkTest, TemplateL2AndMakeCredentialByEcdh) {
  const auto ek_key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  const std::vector<uint8_t> raw = ek_key.public_key().ToRaw();
  auto ek = ParseTpm2bPublic(
      DefaultEccEkTpm2bPublic(std::span(raw).subspan(1, 32), std::span(raw).subspan(33, 32)));
  ASSERT_TRUE(ek.has_value()) << ek.error().message();
  EXPECT_EQ(ek->type, kTpmAlgEcc);
  EXPECT_EQ(ek->attributes, 0x000300b2u);
  EXPECT_EQ(ek->symmetric_bits, 128);
  EXPECT_EQ(*EccPoint(*ek), raw);

  const std::vector<uint8_t> name(34, 0x0b);
  const std::vector<uint8_t> secret(32, 0x5a);
  const std::vector<uint8_t> ephemeral(32, 0x07);
  auto made = MakeCredential(*ek, name, secret, ephemeral);
  ASSERT_TRUE(made.has_value()) << made.error().message();
  // TPM2B_ENCRYPTED_SECRET holding a TPMS_ECC_POINT: 7 * G.
  ASSERT_EQ(made->encrypted_secret.size(), 2u + 2 + 32 + 2 + 32);
  EXPECT_EQ(made->encrypted_secret[0], 0);
  EXPECT_EQ(made->encrypted_secret[1], 68);
  auto shared = crypto::EcdhP256(ephemeral, ek->ecc_x, ek->ecc_y);
  ASSERT_TRUE(shared.has_value());
  EXPECT_TRUE(std::equal(shared->ephemeral_x.begin(), shared->ephemeral_x.end(),
                         made->encrypted_secret.begin() + 4));
  // The same inputs give the same credential; another ephemeral key another one.
  EXPECT_EQ(MakeCredential(*ek, name, secret, ephemeral)->credential_blob, made->credential_blob);
  EXPECT_NE(MakeCredential(*ek, name, secret, std::vector<uint8_t>(32, 8))->credential_blob,
            made->credential_blob);
  // An ephemeral scalar of zero or past the group order is refused, as is a point off the curve.
  EXPECT_FALSE(MakeCredential(*ek, name, secret, std::vector<uint8_t>(32, 0)));
  EXPECT_FALSE(MakeCredential(*ek, name, secret, std::vector<uint8_t>(32, 0xff)));
  TpmPublic off_curve = *ek;
  off_curve.ecc_y.back() ^= 1;
  auto refused = MakeCredential(off_curve, name, secret, ephemeral);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("not on the curve"), std::string::npos);
}

TEST(Tpm2EccEkTest, KdfeIsCounterModeSha256) {
  const std::vector<uint8_t> z(32, 1), u(32, 2), v(32, 3);
  std::vector<uint8_t> in = {0, 0, 0, 1};
  in.insert(in.end(), z.begin(), z.end());
  for (char ch : std::string_view("IDENTITY")) in.push_back(static_cast<uint8_t>(ch));
  in.push_back(0);
  in.insert(in.end(), u.begin(), u.end());
  in.insert(in.end(), v.begin(), v.end());
  const auto first = crypto::Sha256(in);
  EXPECT_EQ(KdfeSha256(z, "IDENTITY", u, v, 256), std::vector<uint8_t>(first.begin(), first.end()));
  const std::vector<uint8_t> longer = KdfeSha256(z, "IDENTITY", u, v, 384);
  ASSERT_EQ(longer.size(), 48u);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), longer.begin()));
}

}  // namespace
}  // namespace moat::formats
