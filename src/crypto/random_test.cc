#include "crypto/random.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace moat::crypto {
namespace {

TEST(RandomBytesTest, ReturnsRequestedLength) {
  EXPECT_TRUE(RandomBytes(0).empty());
  EXPECT_EQ(RandomBytes(1).size(), 1u);
  EXPECT_EQ(RandomBytes(4096).size(), 4096u);
}

TEST(RandomBytesTest, OutputsDiffer) {
  // 32 random bytes colliding has probability 2^-256.
  std::set<std::vector<uint8_t>> seen;
  for (int i = 0; i < 16; ++i) EXPECT_TRUE(seen.insert(RandomBytes(32)).second);
}

TEST(RandomBytesTest, NotObviouslyBiased) {
  // Every byte value shows up in 64 KiB (the chance that one does not is about 256 * e^-256).
  const std::vector<uint8_t> bytes = RandomBytes(64 * 1024);
  std::vector<int> counts(256, 0);
  for (uint8_t b : bytes) ++counts[b];
  for (int value = 0; value < 256; ++value) EXPECT_GT(counts[value], 0) << value;
}

TEST(OpenSslRandomTest, FillsAndServesTheRandomInterface) {
  OpenSslRandom random;
  std::vector<uint8_t> a(64, 0), b(64, 0);
  random.Fill(a);
  random.Fill(b);
  EXPECT_NE(a, b);
  random.Fill(std::span<uint8_t>());  // empty is fine
  for (int i = 0; i < 1000; ++i) EXPECT_LT(random.Uniform(10), 10u);
  const std::string uuid = random.NewUuid();
  ASSERT_EQ(uuid.size(), 36u);
  EXPECT_EQ(uuid[14], '4');  // version 4
}

TEST(ConstantTimeEqualsTest, Semantics) {
  const std::vector<uint8_t> a = {1, 2, 3, 4};
  const std::vector<uint8_t> same = {1, 2, 3, 4};
  const std::vector<uint8_t> first_differs = {9, 2, 3, 4};
  const std::vector<uint8_t> last_differs = {1, 2, 3, 5};
  const std::vector<uint8_t> prefix = {1, 2, 3};
  const std::vector<uint8_t> longer = {1, 2, 3, 4, 0};
  EXPECT_TRUE(ConstantTimeEquals(a, same));
  EXPECT_TRUE(ConstantTimeEquals(a, a));
  EXPECT_FALSE(ConstantTimeEquals(a, first_differs));
  EXPECT_FALSE(ConstantTimeEquals(a, last_differs));
  EXPECT_FALSE(ConstantTimeEquals(a, prefix));
  EXPECT_FALSE(ConstantTimeEquals(a, longer));
  EXPECT_FALSE(ConstantTimeEquals(prefix, a));
  EXPECT_TRUE(ConstantTimeEquals(std::span<const uint8_t>(), std::span<const uint8_t>()));
  EXPECT_FALSE(ConstantTimeEquals(std::span<const uint8_t>(), a));
  EXPECT_FALSE(ConstantTimeEquals(a, std::span<const uint8_t>()));
}

TEST(ConstantTimeEqualsTest, EverySingleBitFlipIsDetected) {
  std::vector<uint8_t> a = RandomBytes(32);
  for (size_t i = 0; i < a.size() * 8; ++i) {
    std::vector<uint8_t> b = a;
    b[i / 8] ^= static_cast<uint8_t>(1u << (i % 8));
    ASSERT_FALSE(ConstantTimeEquals(a, b)) << "bit " << i;
  }
}

TEST(WipeTest, ZeroesTheBuffer) {
  std::vector<uint8_t> secret = {0xde, 0xad, 0xbe, 0xef};
  Wipe(secret);
  EXPECT_EQ(secret, std::vector<uint8_t>(4, 0));
  Wipe(std::span<uint8_t>());  // empty is fine
}

}  // namespace
}  // namespace moat::crypto
