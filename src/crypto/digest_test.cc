#include "crypto/digest.h"

#include "core/file.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/encoding.h"

namespace moat::crypto {
namespace {

// Known-answer vectors from FIPS 180-2 / NIST CAVP.
constexpr std::string_view kAbc = "abc";
constexpr std::string_view kTwoBlock = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

TEST(Sha256Test, KnownAnswers) {
  EXPECT_EQ(HexEncode(Sha256(std::string_view(""))),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexEncode(Sha256(kAbc)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexEncode(Sha256(kTwoBlock)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(HexEncode(Sha256(std::string(1'000'000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha512Test, KnownAnswers) {
  EXPECT_EQ(HexEncode(Sha512(AsBytes(""))),
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
            "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e");
  EXPECT_EQ(HexEncode(Sha512(AsBytes(kAbc))),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
  const std::string million(1'000'000, 'a');
  EXPECT_EQ(HexEncode(Sha512(AsBytes(million))),
            "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
            "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b");
}

TEST(Sha256Test, SpanAndStringOverloadsAgree) {
  const std::vector<uint8_t> bytes = {'a', 'b', 'c'};
  EXPECT_EQ(Sha256(bytes), Sha256(kAbc));
  EXPECT_EQ(Sha256(std::span<const uint8_t>()), Sha256(std::string_view()));
}

TEST(HasherTest, DigestSizes) {
  EXPECT_EQ(Hasher::Create(DigestAlgorithm::kSha256).digest_size(), 32u);
  EXPECT_EQ(Hasher::Create(DigestAlgorithm::kSha512).digest_size(), 64u);
}

TEST(HasherTest, EmptyStreamEqualsEmptyDigest) {
  Hasher h256 = Hasher::Create(DigestAlgorithm::kSha256);
  const Sha256Digest empty256 = Sha256(std::string_view());
  EXPECT_EQ(h256.Finish(), std::vector<uint8_t>(empty256.begin(), empty256.end()));
  Hasher h512 = Hasher::Create(DigestAlgorithm::kSha512);
  h512.Update(std::string_view());
  const Sha512Digest empty512 = Sha512(std::span<const uint8_t>());
  EXPECT_EQ(h512.Finish(), std::vector<uint8_t>(empty512.begin(), empty512.end()));
}

TEST(HasherTest, MillionAsInChunksMatchesVector) {
  const std::string chunk(1000, 'a');
  Hasher hasher = Hasher::Create(DigestAlgorithm::kSha256);
  for (int i = 0; i < 1000; ++i) hasher.Update(chunk);
  EXPECT_EQ(HexEncode(hasher.Finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Every split of a message that spans several blocks, including splits inside a block and at
// block boundaries (64 bytes for SHA-256, 128 for SHA-512), gives the one-shot digest.
TEST(HasherTest, StreamingEqualsOneShotForEverySplit) {
  std::vector<uint8_t> message(300);
  for (size_t i = 0; i < message.size(); ++i) message[i] = static_cast<uint8_t>(i * 7 + 3);
  const std::span<const uint8_t> all(message);
  const Sha256Digest one_shot_256 = Sha256(all);
  const Sha512Digest one_shot_512 = Sha512(all);
  for (size_t split = 0; split <= message.size(); ++split) {
    Hasher h256 = Hasher::Create(DigestAlgorithm::kSha256);
    h256.Update(all.first(split));
    h256.Update(all.subspan(split));
    ASSERT_EQ(h256.Finish(), std::vector<uint8_t>(one_shot_256.begin(), one_shot_256.end()))
        << "split at " << split;

    Hasher h512 = Hasher::Create(DigestAlgorithm::kSha512);
    h512.Update(all.first(split));
    h512.Update(all.subspan(split));
    ASSERT_EQ(h512.Finish(), std::vector<uint8_t>(one_shot_512.begin(), one_shot_512.end()))
        << "split at " << split;
  }
}

TEST(HasherTest, ByteAtATimeEqualsOneShot) {
  Hasher hasher = Hasher::Create(DigestAlgorithm::kSha512);
  for (char c : kTwoBlock) hasher.Update(std::string_view(&c, 1));
  const Sha512Digest expected = Sha512(AsBytes(kTwoBlock));
  EXPECT_EQ(hasher.Finish(), std::vector<uint8_t>(expected.begin(), expected.end()));
}

TEST(HasherTest, MovedHasherKeepsItsState) {
  Hasher first = Hasher::Create(DigestAlgorithm::kSha256);
  first.Update(std::string_view("ab"));
  Hasher second = std::move(first);
  second.Update(std::string_view("c"));
  Hasher third = Hasher::Create(DigestAlgorithm::kSha512);
  third = std::move(second);
  EXPECT_EQ(third.digest_size(), 32u);
  EXPECT_EQ(HexEncode(third.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DigestTest, Sha256OfFileMatchesInMemoryAndNamesMissingFiles) {
  auto dir = TempDir::Create("moat-digest");
  ASSERT_TRUE(dir.has_value());
  // Over one read buffer (1 MiB), so the streaming path is exercised.
  std::string content((3 << 20) + 17, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 131 + 7);
  ASSERT_TRUE(AtomicWriteFile(dir->path() / "f", content).has_value());
  auto d = Sha256OfFile(dir->path() / "f");
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(*d, Sha256(content));
  auto missing = Sha256OfFile(dir->path() / "missing");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("missing"), std::string::npos);
}

}  // namespace
}  // namespace moat::crypto
