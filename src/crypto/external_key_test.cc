#include <gtest/gtest.h>

#include "crypto/key.h"

namespace moat::crypto {
namespace {

TEST(ExternalKeyTest, SignerBackedKeySignsThroughTheCallbackOnly) {
  auto secret = *PrivateKey::Generate(KeyType::kEcdsaP256);
  int calls = 0;
  auto external = PrivateKey::FromSigner(secret.public_key(), [&](const Sha256Digest& d) {
    ++calls;
    return secret.SignDigest(d);
  });
  ASSERT_TRUE(external) << external.error().message();
  EXPECT_EQ(external->public_key(), secret.public_key());
  auto sig = external->Sign(std::string_view("hello"));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(secret.public_key().Verify("hello", *sig));
  auto dsig = external->SignDigest(Sha256("x"));
  ASSERT_TRUE(dsig) << dsig.error().message();
  EXPECT_TRUE(secret.public_key().VerifyDigest(Sha256("x"), *dsig));
  EXPECT_EQ(calls, 2);
  // There are no private bytes to export.
  EXPECT_FALSE(external->ToPem());
}

TEST(ExternalKeyTest, SignerErrorsFailTheSignature) {
  auto secret = *PrivateKey::Generate(KeyType::kEcdsaP256);
  auto external = *PrivateKey::FromSigner(secret.public_key(), [](const Sha256Digest&) {
    return Result<std::vector<uint8_t>>(Fail(ErrorCode::kUnavailable, "token removed"));
  });
  EXPECT_FALSE(external.Sign(std::string_view("hello")));
  auto ed = *PrivateKey::Generate(KeyType::kEd25519);
  EXPECT_FALSE(PrivateKey::FromSigner(ed.public_key(), [](const Sha256Digest&) {
    return Result<std::vector<uint8_t>>(std::vector<uint8_t>{});
  }));
}

TEST(ExternalKeyTest, RawRsRoundTripsThroughDer) {
  auto key = *PrivateKey::Generate(KeyType::kEcdsaP256);
  auto der = *key.SignDigest(Sha256("m"));
  auto rs = EcdsaSignatureToRS(der);
  ASSERT_TRUE(rs);
  ASSERT_EQ(rs->size(), 64u);
  auto back = EcdsaSignatureFromRS(std::span(*rs).first(32), std::span(*rs).last(32));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, der);
  EXPECT_TRUE(key.public_key().VerifyDigest(Sha256("m"), *back));
  EXPECT_FALSE(EcdsaSignatureFromRS({}, std::span(*rs).last(32)));
  EXPECT_FALSE(EcdsaSignatureToRS(std::vector<uint8_t>{1, 2, 3}));
}

TEST(ExternalKeyTest, UnknownProviderIsUnavailable) {
  auto r = PrivateKey::FromProvider({.provider = "moat-no-such-provider", .uri = "handle:1"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace moat::crypto
