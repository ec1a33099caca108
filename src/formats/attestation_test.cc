#include "formats/attestation.h"

#include <gtest/gtest.h>

#include "core/encoding.h"
#include "crypto/key.h"

namespace moat::formats {
namespace {

AttestationEvidence SampleEvidence() {
  AttestationEvidence e;
  e.device_id = std::string(64, 'a');
  e.nonce.assign(32, 7);
  e.os_version = "moat-os 1.0";
  e.log.entries.push_back(
      {0, MeasurementKind::kBoot, "bootloader", "2024.01", crypto::Sha256("u-boot")});
  e.log.entries.push_back({kMoatPcr, MeasurementKind::kOs, "os", "1.0", crypto::Sha256("rootfs")});
  e.log.entries.push_back({kMoatPcr, MeasurementKind::kApp, "6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10",
                           "", crypto::Sha256("app")});
  e.signature = {1, 2, 3};
  return e;
}

TEST(MeasurementLogTest, ReplayFollowsPcrSemantics) {
  auto e = SampleEvidence();
  auto pcrs = ReplayMeasurementLog(e.log);
  ASSERT_EQ(pcrs.size(), 2u);
  crypto::Sha256Digest zero{};
  EXPECT_EQ(pcrs[0], ExtendPcr(zero, crypto::Sha256("u-boot")));
  EXPECT_EQ(pcrs[kMoatPcr],
            ExtendPcr(ExtendPcr(zero, crypto::Sha256("rootfs")), crypto::Sha256("app")));
  // Order matters: swapping two entries of one register changes its value.
  std::swap(e.log.entries[1], e.log.entries[2]);
  EXPECT_NE(ReplayMeasurementLog(e.log)[kMoatPcr], pcrs[kMoatPcr]);
}

TEST(AttestationEvidenceTest, JsonRoundTrip) {
  auto e = SampleEvidence();
  auto parsed = ParseJson(DumpJson(ToJson(e)), "evidence");
  ASSERT_TRUE(parsed);
  auto back = AttestationEvidenceFromJson(*parsed);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->device_id, e.device_id);
  EXPECT_EQ(back->nonce, e.nonce);
  EXPECT_EQ(back->log, e.log);
  EXPECT_EQ(back->os_version, e.os_version);
  EXPECT_EQ(back->signature, e.signature);
  EXPECT_EQ(AttestationSigningInput(*back), AttestationSigningInput(e));
}

TEST(AttestationEvidenceTest, SigningInputBindsNonceLogAndDevice) {
  auto e = SampleEvidence();
  auto base = AttestationSigningInput(e);
  auto other = e;
  other.nonce[0] ^= 1;
  EXPECT_NE(AttestationSigningInput(other), base);
  other = e;
  other.log.entries[0].digest[0] ^= 1;
  EXPECT_NE(AttestationSigningInput(other), base);
  other = e;
  other.device_id[0] = 'b';
  EXPECT_NE(AttestationSigningInput(other), base);
  other = e;
  other.os_version = "moat-os 0.9";
  EXPECT_NE(AttestationSigningInput(other), base);

  // End to end with a real key: sign, verify, tamper.
  auto key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto sig = *key.Sign(base);
  EXPECT_TRUE(key.public_key().Verify(base, sig));
  EXPECT_FALSE(key.public_key().Verify(AttestationSigningInput(other), sig));
}

Result<AttestationEvidence> ParseWith(const std::function<void(Json&)>& mutate) {
  Json j = ToJson(SampleEvidence());
  mutate(j);
  return AttestationEvidenceFromJson(j);
}

TEST(AttestationEvidenceTest, RejectsMalformedEvidenceNamingTheField) {
  struct Case {
    std::function<void(Json&)> mutate;
    std::string error;
  };
  const Case cases[] = {
      {[](Json& j) { j.erase("nonce"); }, "evidence: missing required field 'nonce'"},
      {[](Json& j) { j["device_id"] = "ABC"; },
       "evidence.device_id: device ID 'ABC' is not 64 lowercase hexadecimal characters"},
      {[](Json& j) { j["nonce"] = "AAAA"; }, "evidence.nonce: not 32 bytes of unpadded base64url"},
      {[](Json& j) { j["log"][1]["pcr"] = 24; }, "evidence.log[1].pcr: 24 is out of range 0..23"},
      {[](Json& j) { j["log"][0]["kind"] = "firmware"; },
       "evidence.log[0].kind: unknown measurement kind 'firmware' (boot, os or app)"},
      {[](Json& j) { j["log"][2]["sha256"] = "00"; },
       "evidence.log[2].sha256: not 64 hexadecimal characters"},
      {[](Json& j) { j["log"][0]["extra"] = 1; }, "evidence.log[0]: unknown field 'extra'"},
      {[](Json& j) { j["log"] = Json::object(); }, "evidence.log: expected array, got object"},
      {[](Json& j) { j["format"] = "sgx"; },
       "evidence.format: unknown evidence format 'sgx' (signature or tpm2-quote)"},
      {[](Json& j) { j["signature"] = ""; }, "evidence.signature: must not be empty"},
      {[](Json& j) { j["os_version"] = 5; }, "evidence.os_version: expected string, got integer"},
      {[](Json& j) { j["quote"] = "x"; }, "evidence: unknown field 'quote'"},
  };
  for (const auto& c : cases) {
    auto r = ParseWith(c.mutate);
    ASSERT_FALSE(r) << c.error;
    EXPECT_EQ(r.error().message(), c.error);
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  }
}

TEST(AttestationEvidenceTest, LogSizeIsBounded) {
  auto r = ParseWith([](Json& j) {
    Json entry = j["log"][0];
    j["log"] = Json::array();
    for (size_t i = 0; i <= kMaxMeasurements; ++i) j["log"].push_back(entry);
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(r.error().message(), "evidence.log: 513 entries exceeds the limit of 512");
}

}  // namespace
}  // namespace moat::formats
