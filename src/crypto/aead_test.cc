#include "crypto/aead.h"

#include <gtest/gtest.h>

#include "core/encoding.h"
#include "crypto/random.h"

namespace moat::crypto {
namespace {

AeadKey NewKey() {
  AeadKey k;
  OpenSslRandom().Fill(k);
  return k;
}

TEST(AeadTest, SealOpenRoundTripAndFreshNonces) {
  AeadKey key = NewKey();
  auto a = AeadSeal(key, AsBytes("secret key pem"), AsBytes("tenant-ca:1"));
  auto b = AeadSeal(key, AsBytes("secret key pem"), AsBytes("tenant-ca:1"));
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);  // random nonce per seal
  EXPECT_EQ(a->size(), 12 + 14 + 16u);
  auto opened = AeadOpen(key, *a, AsBytes("tenant-ca:1"));
  ASSERT_TRUE(opened);
  EXPECT_EQ(AsChars(*opened), "secret key pem");
}

TEST(AeadTest, EveryModificationIsDetected) {
  AeadKey key = NewKey();
  auto sealed = *AeadSeal(key, AsBytes("secret"), AsBytes("ad"));
  for (size_t i = 0; i < sealed.size(); ++i) {
    auto copy = sealed;
    copy[i] ^= 0x80;
    auto r = AeadOpen(key, copy, AsBytes("ad"));
    ASSERT_FALSE(r) << "byte " << i;
    EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  }
  EXPECT_EQ(AeadOpen(key, sealed, AsBytes("other")).error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(AeadOpen(NewKey(), sealed, AsBytes("ad")).error().code(),
            ErrorCode::kVerificationFailed);
  EXPECT_EQ(AeadOpen(key, std::span(sealed.data(), 20), AsBytes("ad")).error().code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace moat::crypto
