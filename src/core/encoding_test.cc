#include "core/encoding.h"

#include <gtest/gtest.h>

#include "core/random.h"

namespace moat {
namespace {

TEST(HexTest, EncodesLowercaseAndDecodesBothCases) {
  std::vector<uint8_t> data{0x00, 0xab, 0xff, 0x10};
  EXPECT_EQ(HexEncode(data), "00abff10");
  EXPECT_EQ(*HexDecode("00ABff10"), data);
}

TEST(HexTest, RejectsOddLengthAndBadDigits) {
  auto odd = HexDecode("abc");
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().message(), "hex: odd number of digits (3)");
  auto bad = HexDecode("a0zz");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "hex: invalid digit at position 2");
}

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (auto [plain, encoded] : vectors) {
    EXPECT_EQ(Base64Encode(AsBytes(plain)), encoded);
    auto d = Base64Decode(encoded);
    ASSERT_TRUE(d) << encoded;
    EXPECT_EQ(AsChars(*d), plain);
  }
}

TEST(Base64Test, UrlAlphabetWithoutPadding) {
  std::vector<uint8_t> data{0xfb, 0xff, 0xbf};
  EXPECT_EQ(Base64Encode(data), "+/+/");
  EXPECT_EQ(Base64Encode(data, Base64Alphabet::kUrl, Base64Padding::kWithout), "-_-_");
  EXPECT_EQ(*Base64Decode("-_-_", Base64Alphabet::kUrl, Base64Padding::kWithout), data);
  EXPECT_EQ(AsChars(*Base64Decode("Zm8", Base64Alphabet::kUrl, Base64Padding::kWithout)), "fo");
}

TEST(Base64Test, RejectsMalformed) {
  EXPECT_EQ(Base64Decode("Zm9").error().message(), "base64: length 3 is not a multiple of 4");
  EXPECT_EQ(Base64Decode("Zm$v").error().message(), "base64: invalid character at position 2");
  EXPECT_EQ(Base64Decode("Zh==").error().message(), "base64: non-zero trailing bits");
  EXPECT_FALSE(Base64Decode("Z==="));
  // Padding is refused where it is not expected.
  EXPECT_FALSE(Base64Decode("Zg==", Base64Alphabet::kUrl, Base64Padding::kWithout));
}

TEST(Base64Test, RoundTripsRandomData) {
  FakeRandom rng(42);
  for (size_t n = 0; n < 100; ++n) {
    std::vector<uint8_t> data(n);
    rng.Fill(data);
    for (auto a : {Base64Alphabet::kStandard, Base64Alphabet::kUrl}) {
      for (auto p : {Base64Padding::kWith, Base64Padding::kWithout}) {
        auto d = Base64Decode(Base64Encode(data, a, p), a, p);
        ASSERT_TRUE(d);
        EXPECT_EQ(*d, data);
      }
    }
  }
}

TEST(RandomTest, UuidIsVersion4AndUniformIsInRange) {
  SystemRandom rng;
  std::string u = rng.NewUuid();
  ASSERT_EQ(u.size(), 36u);
  EXPECT_EQ(u[14], '4');
  EXPECT_NE(std::string("89ab").find(u[19]), std::string::npos);
  EXPECT_NE(rng.NewUuid(), u);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(rng.Uniform(7), 7u);
}

}  // namespace
}  // namespace moat
