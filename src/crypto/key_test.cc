#include "crypto/key.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/encoding.h"
#include "core/file.h"
#include "support/pki.h"
#include "support/shell.h"

namespace moat::crypto {
namespace {

using ::testing::HasSubstr;

// The test PKI made by tests/pki/make-test-pki.sh with the openssl command line.
using test_support::RunShell;

std::filesystem::path PkiFile(std::string_view name) { return test_support::TestPkiFile(name); }
std::string ReadPki(std::string_view name) { return test_support::ReadTestPki(name); }

void WriteBytes(const std::filesystem::path& path, std::span<const uint8_t> data) {
  ASSERT_TRUE(AtomicWriteFile(path, data).has_value()) << path;
}

std::vector<uint8_t> ReadBytes(const std::filesystem::path& path) {
  auto bytes = ReadFileBytes(path, 1 << 20);
  EXPECT_TRUE(bytes.has_value()) << path;
  return bytes.value_or(std::vector<uint8_t>{});
}

std::string KeyTypeParamName(const ::testing::TestParamInfo<KeyType>& param_info) {
  return param_info.param == KeyType::kEcdsaP256 ? "P256" : "Ed25519";
}

class KeyTypeTest : public ::testing::TestWithParam<KeyType> {};

INSTANTIATE_TEST_SUITE_P(BothTypes, KeyTypeTest,
                         ::testing::Values(KeyType::kEcdsaP256, KeyType::kEd25519),
                         KeyTypeParamName);

TEST_P(KeyTypeTest, SignVerifyRoundTrip) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value()) << key.error().message();
  EXPECT_EQ(key->type(), GetParam());
  EXPECT_EQ(key->public_key().type(), GetParam());
  auto signature = key->Sign("firmware image v1.2.3");
  ASSERT_TRUE(signature.has_value());
  EXPECT_TRUE(key->public_key().Verify("firmware image v1.2.3", *signature).has_value());
  // The empty message can be signed too.
  auto empty = key->Sign(std::string_view());
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(key->public_key().Verify(std::string_view(), *empty).has_value());
}

TEST_P(KeyTypeTest, FlippedMessageBitFails) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  const std::vector<uint8_t> message = {'u', 'p', 'd', 'a', 't', 'e'};
  auto signature = key->Sign(message);
  ASSERT_TRUE(signature.has_value());
  for (size_t bit = 0; bit < message.size() * 8; ++bit) {
    std::vector<uint8_t> tampered = message;
    tampered[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    auto result = key->public_key().Verify(tampered, *signature);
    ASSERT_FALSE(result.has_value()) << "bit " << bit;
    EXPECT_EQ(result.error().code(), ErrorCode::kVerificationFailed) << "bit " << bit;
  }
}

TEST_P(KeyTypeTest, FlippedSignatureBitFails) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  auto signature = key->Sign("message");
  ASSERT_TRUE(signature.has_value());
  for (size_t bit = 0; bit < signature->size() * 8; ++bit) {
    std::vector<uint8_t> tampered = *signature;
    tampered[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    auto result = key->public_key().Verify("message", tampered);
    ASSERT_FALSE(result.has_value()) << "bit " << bit;
    EXPECT_EQ(result.error().code(), ErrorCode::kVerificationFailed) << "bit " << bit;
  }
}

TEST_P(KeyTypeTest, WrongKeyFails) {
  auto signer = PrivateKey::Generate(GetParam());
  auto other = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(signer.has_value() && other.has_value());
  auto signature = signer->Sign("message");
  ASSERT_TRUE(signature.has_value());
  auto result = other->public_key().Verify("message", *signature);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_THAT(result.error().message(), HasSubstr("does not match"));
}

TEST_P(KeyTypeTest, MalformedSignatureSizes) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  auto empty = key->public_key().Verify("m", std::span<const uint8_t>());
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), ErrorCode::kInvalidArgument);
  auto huge = key->public_key().Verify("m", std::vector<uint8_t>(513, 0x30));
  ASSERT_FALSE(huge.has_value());
  EXPECT_EQ(huge.error().code(), ErrorCode::kInvalidArgument);
  auto junk = key->public_key().Verify("m", std::vector<uint8_t>(64, 0));
  ASSERT_FALSE(junk.has_value());
  EXPECT_EQ(junk.error().code(), ErrorCode::kVerificationFailed);
}

TEST_P(KeyTypeTest, PublicKeyEncodingsRoundTrip) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  const PublicKey pub = key->public_key();

  auto from_der = PublicKey::FromDer(pub.ToDer());
  ASSERT_TRUE(from_der.has_value()) << from_der.error().message();
  EXPECT_TRUE(*from_der == pub);
  EXPECT_EQ(from_der->ToDer(), pub.ToDer());

  const std::string pem = pub.ToPem();
  EXPECT_TRUE(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
  auto from_pem = PublicKey::FromPem(pem);
  ASSERT_TRUE(from_pem.has_value()) << from_pem.error().message();
  EXPECT_TRUE(*from_pem == pub);

  const std::vector<uint8_t> raw = pub.ToRaw();
  EXPECT_EQ(raw.size(), GetParam() == KeyType::kEd25519 ? 32u : 65u);
  auto from_raw = PublicKey::FromRaw(GetParam(), raw);
  ASSERT_TRUE(from_raw.has_value()) << from_raw.error().message();
  EXPECT_TRUE(*from_raw == pub);
  EXPECT_EQ(from_raw->ToRaw(), raw);

  // A key reloaded from any encoding still verifies the original key's signatures.
  auto signature = key->Sign("payload");
  ASSERT_TRUE(signature.has_value());
  EXPECT_TRUE(from_raw->Verify("payload", *signature).has_value());
}

TEST_P(KeyTypeTest, PrivateKeyPemRoundTrip) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  auto pem = key->ToPem();
  ASSERT_TRUE(pem.has_value());
  EXPECT_TRUE(pem->view().starts_with("-----BEGIN PRIVATE KEY-----\n"));
  auto reloaded = PrivateKey::FromPem(pem->view());
  ASSERT_TRUE(reloaded.has_value()) << reloaded.error().message();
  EXPECT_EQ(reloaded->type(), GetParam());
  EXPECT_TRUE(reloaded->public_key() == key->public_key());
  auto signature = reloaded->Sign("payload");
  ASSERT_TRUE(signature.has_value());
  EXPECT_TRUE(key->public_key().Verify("payload", *signature).has_value());
}

// Whether an OpenSSL key object carries private material.
bool HoldsPrivateKey(EVP_PKEY* key, KeyType type) {
  if (type == KeyType::kEd25519) {
    size_t len = 0;
    return EVP_PKEY_get_raw_private_key(key, nullptr, &len) == 1 && len == 32;
  }
  BIGNUM* secret = nullptr;
  const bool found = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &secret) == 1;
  BN_clear_free(secret);
  return found;
}

TEST_P(KeyTypeTest, PublicHalfDoesNotCarryTheSecret) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  EXPECT_TRUE(HoldsPrivateKey(key->native(), GetParam()));
  const PublicKey pub = key->public_key();
  EXPECT_FALSE(HoldsPrivateKey(pub.native(), GetParam()));
  EXPECT_NE(pub.native(), key->native());
  ERR_clear_error();
}

TEST_P(KeyTypeTest, FingerprintIsSha256OfSpki) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.has_value());
  const PublicKey pub = key->public_key();
  EXPECT_EQ(pub.Fingerprint(), Sha256(pub.ToDer()));
  EXPECT_EQ(pub.FingerprintHex(), HexEncode(Sha256(pub.ToDer())));
  EXPECT_EQ(pub.FingerprintHex().size(), 64u);
  auto other = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(other.has_value());
  EXPECT_NE(other->public_key().Fingerprint(), pub.Fingerprint());
  EXPECT_FALSE(other->public_key() == pub);
}

TEST(KeyTest, TypesOfDifferentAlgorithmsAreNotEqual) {
  auto p256 = PrivateKey::Generate(KeyType::kEcdsaP256);
  auto ed = PrivateKey::Generate(KeyType::kEd25519);
  ASSERT_TRUE(p256.has_value() && ed.has_value());
  EXPECT_FALSE(p256->public_key() == ed->public_key());
}

TEST(KeyTest, KeyTypeNames) {
  EXPECT_EQ(KeyTypeName(KeyType::kEcdsaP256), "ecdsa-p256");
  EXPECT_EQ(KeyTypeName(KeyType::kEd25519), "ed25519");
  EXPECT_EQ(ParseKeyType("ecdsa-p256").value(), KeyType::kEcdsaP256);
  EXPECT_EQ(ParseKeyType("ed25519").value(), KeyType::kEd25519);
  auto bad = ParseKeyType("rsa-2048");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(bad.error().message(), HasSubstr("rsa-2048"));
}

TEST(KeyTest, FromRawRejectsOffCurvePoint) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  std::vector<uint8_t> raw = key->public_key().ToRaw();
  ASSERT_EQ(raw.size(), 65u);
  raw[64] ^= 0x01;  // (x, y+-1) is not on the curve
  auto result = PublicKey::FromRaw(KeyType::kEcdsaP256, raw);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);

  // The all-zero "point" (not even the point at infinity's encoding) is rejected as well.
  std::vector<uint8_t> zero(65, 0);
  zero[0] = 0x04;
  auto zero_result = PublicKey::FromRaw(KeyType::kEcdsaP256, zero);
  ASSERT_FALSE(zero_result.has_value());
  EXPECT_EQ(zero_result.error().code(), ErrorCode::kInvalidArgument);
}

TEST(KeyTest, FromRawRejectsWrongSizesAndForms) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  std::vector<uint8_t> raw = key->public_key().ToRaw();
  // Compressed form (0x02/0x03 || X) is not accepted.
  std::vector<uint8_t> compressed(raw.begin(), raw.begin() + 33);
  compressed[0] = 0x02;
  for (const auto& bad :
       {compressed, std::vector<uint8_t>(raw.begin(), raw.end() - 1), std::vector<uint8_t>{}}) {
    auto result = PublicKey::FromRaw(KeyType::kEcdsaP256, bad);
    ASSERT_FALSE(result.has_value()) << bad.size();
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
  }
  raw[0] = 0x05;
  auto bad_prefix = PublicKey::FromRaw(KeyType::kEcdsaP256, raw);
  ASSERT_FALSE(bad_prefix.has_value());
  EXPECT_EQ(bad_prefix.error().code(), ErrorCode::kInvalidArgument);

  for (size_t size : {0u, 31u, 33u, 65u}) {
    auto result = PublicKey::FromRaw(KeyType::kEd25519, std::vector<uint8_t>(size, 1));
    ASSERT_FALSE(result.has_value()) << size;
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(result.error().message(), HasSubstr("32 bytes"));
  }
}

TEST(KeyTest, MalformedPublicKeyInputs) {
  auto key = PrivateKey::Generate(KeyType::kEcdsaP256);
  ASSERT_TRUE(key.has_value());
  std::vector<uint8_t> der = key->public_key().ToDer();

  auto empty = PublicKey::FromDer({});
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), ErrorCode::kInvalidArgument);

  std::vector<uint8_t> trailing = der;
  trailing.push_back(0);
  auto trailing_result = PublicKey::FromDer(trailing);
  ASSERT_FALSE(trailing_result.has_value());
  EXPECT_EQ(trailing_result.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(trailing_result.error().message(), HasSubstr("trailing"));

  std::vector<uint8_t> truncated(der.begin(), der.end() - 1);
  auto truncated_result = PublicKey::FromDer(truncated);
  ASSERT_FALSE(truncated_result.has_value());
  EXPECT_EQ(truncated_result.error().code(), ErrorCode::kInvalidArgument);

  auto oversized = PublicKey::FromDer(std::vector<uint8_t>(9000, 0x30));
  ASSERT_FALSE(oversized.has_value());
  EXPECT_EQ(oversized.error().code(), ErrorCode::kInvalidArgument);

  auto not_pem = PublicKey::FromPem("hello");
  ASSERT_FALSE(not_pem.has_value());
  EXPECT_EQ(not_pem.error().code(), ErrorCode::kInvalidArgument);

  auto big_pem = PublicKey::FromPem(std::string(17 * 1024, 'A'));
  ASSERT_FALSE(big_pem.has_value());
  EXPECT_EQ(big_pem.error().code(), ErrorCode::kLimitExceeded);

  // A private key is not a public key.
  auto private_pem = key->ToPem();
  ASSERT_TRUE(private_pem.has_value());
  auto wrong_block = PublicKey::FromPem(private_pem->view());
  ASSERT_FALSE(wrong_block.has_value());
  EXPECT_EQ(wrong_block.error().code(), ErrorCode::kInvalidArgument);
}

TEST(KeyTest, MalformedPrivateKeyInputs) {
  auto junk = PrivateKey::FromPem("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n");
  ASSERT_FALSE(junk.has_value());
  EXPECT_EQ(junk.error().code(), ErrorCode::kInvalidArgument);

  auto big = PrivateKey::FromPem(std::string(17 * 1024, 'A'));
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code(), ErrorCode::kLimitExceeded);

  auto pub = PrivateKey::FromPem(ReadPki("signer-p256.pub"));
  ASSERT_FALSE(pub.has_value());
  EXPECT_EQ(pub.error().code(), ErrorCode::kInvalidArgument);
}

// Keys made by the openssl command line load, and signatures cross-verify both ways.
TEST(KeyInteropTest, OpensslP256KeysAndSignatures) {
  auto key = PrivateKey::FromPem(ReadPki("signer-p256.key"));
  ASSERT_TRUE(key.has_value()) << key.error().message();
  EXPECT_EQ(key->type(), KeyType::kEcdsaP256);
  auto pub = PublicKey::FromPem(ReadPki("signer-p256.pub"));
  ASSERT_TRUE(pub.has_value()) << pub.error().message();
  EXPECT_TRUE(key->public_key() == *pub);

  auto dir = TempDir::Create("crypto-test");
  ASSERT_TRUE(dir.has_value());
  const auto message = dir->path() / "message";
  const auto signature = dir->path() / "signature";
  WriteBytes(message, AsBytes("image bytes"));

  // openssl signs, we verify.
  auto signed_by_openssl = RunShell(fmt::format("openssl dgst -sha256 -sign {} -out {} {}",
                                                PkiFile("signer-p256.key").string(),
                                                signature.string(), message.string()));
  ASSERT_EQ(signed_by_openssl.status, 0) << signed_by_openssl.output;
  EXPECT_TRUE(pub->Verify("image bytes", ReadBytes(signature)).has_value());
  EXPECT_FALSE(pub->Verify("image bytez", ReadBytes(signature)).has_value());

  // We sign, openssl verifies.
  auto ours = key->Sign("image bytes");
  ASSERT_TRUE(ours.has_value());
  WriteBytes(signature, *ours);
  auto verified = RunShell(fmt::format("openssl dgst -sha256 -verify {} -signature {} {}",
                                       PkiFile("signer-p256.pub").string(), signature.string(),
                                       message.string()));
  EXPECT_EQ(verified.status, 0) << verified.output;
  EXPECT_THAT(verified.output, HasSubstr("Verified OK"));

  // Our SPKI DER is byte-identical to openssl's.
  const auto spki = dir->path() / "spki.der";
  auto der = RunShell(fmt::format("openssl pkey -pubin -in {} -outform DER -out {}",
                                  PkiFile("signer-p256.pub").string(), spki.string()));
  ASSERT_EQ(der.status, 0) << der.output;
  EXPECT_EQ(pub->ToDer(), ReadBytes(spki));
}

TEST(KeyInteropTest, OpensslEd25519KeysAndSignatures) {
  auto key = PrivateKey::FromPem(ReadPki("signer-ed25519.key"));
  ASSERT_TRUE(key.has_value()) << key.error().message();
  EXPECT_EQ(key->type(), KeyType::kEd25519);
  auto pub = PublicKey::FromPem(ReadPki("signer-ed25519.pub"));
  ASSERT_TRUE(pub.has_value()) << pub.error().message();
  EXPECT_TRUE(key->public_key() == *pub);

  auto dir = TempDir::Create("crypto-test");
  ASSERT_TRUE(dir.has_value());
  const auto message = dir->path() / "message";
  const auto signature = dir->path() / "signature";
  WriteBytes(message, AsBytes("targets.json"));

  auto signed_by_openssl = RunShell(
      fmt::format("openssl pkeyutl -sign -rawin -inkey {} -in {} -out {}",
                  PkiFile("signer-ed25519.key").string(), message.string(), signature.string()));
  ASSERT_EQ(signed_by_openssl.status, 0) << signed_by_openssl.output;
  const std::vector<uint8_t> openssl_signature = ReadBytes(signature);
  EXPECT_EQ(openssl_signature.size(), 64u);
  EXPECT_TRUE(pub->Verify("targets.json", openssl_signature).has_value());
  // Ed25519 is deterministic: our signature is the same bytes.
  auto ours = key->Sign("targets.json");
  ASSERT_TRUE(ours.has_value());
  EXPECT_EQ(*ours, openssl_signature);

  WriteBytes(signature, *ours);
  auto verified = RunShell(
      fmt::format("openssl pkeyutl -verify -rawin -pubin -inkey {} -in {} -sigfile {}",
                  PkiFile("signer-ed25519.pub").string(), message.string(), signature.string()));
  EXPECT_EQ(verified.status, 0) << verified.output;
  EXPECT_THAT(verified.output, HasSubstr("Signature Verified Successfully"));
}

TEST(KeyInteropTest, SecOneEcPrivateKeyLoads) {
  auto dir = TempDir::Create("crypto-test");
  ASSERT_TRUE(dir.has_value());
  const auto sec1 = dir->path() / "sec1.key";
  auto converted = RunShell(
      fmt::format("openssl ec -in {} -out {}", PkiFile("signer-p256.key").string(), sec1.string()));
  ASSERT_EQ(converted.status, 0) << converted.output;
  auto text = ReadFile(sec1, 1 << 16);
  ASSERT_TRUE(text.has_value());
  EXPECT_THAT(*text, HasSubstr("BEGIN EC PRIVATE KEY"));
  auto key = PrivateKey::FromPem(*text);
  ASSERT_TRUE(key.has_value()) << key.error().message();
  auto pub = PublicKey::FromPem(ReadPki("signer-p256.pub"));
  ASSERT_TRUE(pub.has_value());
  EXPECT_TRUE(key->public_key() == *pub);
}

TEST(KeyInteropTest, EncryptedAndUnsupportedKeysAreRefused) {
  auto dir = TempDir::Create("crypto-test");
  ASSERT_TRUE(dir.has_value());
  const auto encrypted = dir->path() / "encrypted.key";
  auto made = RunShell(fmt::format("openssl pkey -in {} -aes-256-cbc -passout pass:secret -out {}",
                                   PkiFile("signer-p256.key").string(), encrypted.string()));
  ASSERT_EQ(made.status, 0) << made.output;
  auto text = ReadFile(encrypted, 1 << 16);
  ASSERT_TRUE(text.has_value());
  auto key = PrivateKey::FromPem(*text);
  ASSERT_FALSE(key.has_value());
  EXPECT_EQ(key.error().code(), ErrorCode::kInvalidArgument);

  const auto p384 = dir->path() / "p384.key";
  const auto p384_pub = dir->path() / "p384.pub";
  made = RunShell(
      fmt::format("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out {} && "
                  "openssl pkey -in {} -pubout -out {}",
                  p384.string(), p384.string(), p384_pub.string()));
  ASSERT_EQ(made.status, 0) << made.output;
  auto p384_key = PrivateKey::FromPem(ReadFile(p384, 1 << 16).value_or(""));
  ASSERT_FALSE(p384_key.has_value());
  EXPECT_EQ(p384_key.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(p384_key.error().message(), HasSubstr("unsupported EC curve"));
  auto p384_public = PublicKey::FromPem(ReadFile(p384_pub, 1 << 16).value_or(""));
  ASSERT_FALSE(p384_public.has_value());
  EXPECT_EQ(p384_public.error().code(), ErrorCode::kInvalidArgument);

  const auto x448 = dir->path() / "x448.pub";
  made = RunShell(
      fmt::format("openssl genpkey -algorithm X448 | openssl pkey -pubout -out {}", x448.string()));
  ASSERT_EQ(made.status, 0) << made.output;
  auto x448_public = PublicKey::FromPem(ReadFile(x448, 1 << 16).value_or(""));
  ASSERT_FALSE(x448_public.has_value());
  EXPECT_EQ(x448_public.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(x448_public.error().message(), HasSubstr("unsupported key algorithm"));
}

TEST(SecretStringTest, MoveLeavesSourceEmpty) {
  SecretString a(std::string("key material"));
  SecretString b(std::move(a));
  EXPECT_EQ(b.view(), "key material");
  EXPECT_TRUE(a.view().empty());  // NOLINT(bugprone-use-after-move): checking the contract
  SecretString c;
  c = std::move(b);
  EXPECT_EQ(c.view(), "key material");
  EXPECT_TRUE(b.view().empty());  // NOLINT(bugprone-use-after-move)
}

TEST(KeyDigestTest, SignDigestMatchesMessageSignatures) {
  auto key = *PrivateKey::Generate(KeyType::kEcdsaP256);
  const std::string message = "attestation signing input";
  auto digest = Sha256(message);
  auto sig = key.SignDigest(digest);
  ASSERT_TRUE(sig) << sig.error().message();
  // A digest signature is an ordinary ECDSA-SHA256 signature over the message...
  EXPECT_TRUE(key.public_key().Verify(message, *sig));
  EXPECT_TRUE(key.public_key().VerifyDigest(digest, *sig));
  // ...and a message signature verifies against the digest.
  EXPECT_TRUE(key.public_key().VerifyDigest(digest, *key.Sign(message)));
  digest[0] ^= 1;
  auto bad = key.public_key().VerifyDigest(digest, *sig);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kVerificationFailed);

  auto ed = *PrivateKey::Generate(KeyType::kEd25519);
  auto refused = ed.SignDigest(digest);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(), "ed25519 keys sign messages, not digests");
}

}  // namespace
}  // namespace moat::crypto
