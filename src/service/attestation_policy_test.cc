#include "service/attestation_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moat::service {
namespace {

using formats::Measurement;
using formats::MeasurementKind;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

Measurement M(MeasurementKind kind, std::string name, std::string_view content,
              uint32_t pcr = formats::kMoatPcr) {
  return {.pcr = pcr, .kind = kind, .name = std::move(name), .digest = crypto::Sha256(content)};
}

ReferenceValue R(MeasurementKind kind, std::string name, std::string_view content) {
  return {.kind = kind, .name = std::move(name), .digest = crypto::Sha256(content)};
}

const std::vector<ReferenceValue> kRefs = {
    R(MeasurementKind::kBoot, "bootloader", "u-boot"), R(MeasurementKind::kOs, "os", "os-1"),
    R(MeasurementKind::kOs, "os", "os-2"), R(MeasurementKind::kApp, "app", "app-1")};

TEST(AttestationPolicyTest, KnownGoodLogPasses) {
  formats::MeasurementLog log{{M(MeasurementKind::kBoot, "bootloader", "u-boot", 0),
                               M(MeasurementKind::kOs, "os", "os-2"),
                               M(MeasurementKind::kApp, "app", "app-1")}};
  auto v = EvaluateMeasurements(log, kRefs);
  EXPECT_TRUE(v.passed);
  EXPECT_TRUE(v.failures.empty());
}

TEST(AttestationPolicyTest, UnknownDigestFailsNamingTheEntry) {
  formats::MeasurementLog log{
      {M(MeasurementKind::kOs, "os", "os-1"), M(MeasurementKind::kApp, "app", "app-evil")}};
  auto v = EvaluateMeasurements(log, kRefs);
  EXPECT_FALSE(v.passed);
  ASSERT_EQ(v.failures.size(), 1u);
  EXPECT_THAT(v.failures[0], HasSubstr("app 'app'"));
  EXPECT_THAT(v.failures[0], HasSubstr("1 known-good"));
}

TEST(AttestationPolicyTest, EntryWithoutAnyReferenceFails) {
  formats::MeasurementLog log{
      {M(MeasurementKind::kOs, "os", "os-1"), M(MeasurementKind::kApp, "stranger", "x")}};
  auto v = EvaluateMeasurements(log, kRefs);
  EXPECT_FALSE(v.passed);
  EXPECT_THAT(v.failures, ElementsAre(HasSubstr("no reference value")));
}

TEST(AttestationPolicyTest, KindMattersNotJustNameAndDigest) {
  // An app measured with the OS's name and digest is not the OS.
  formats::MeasurementLog log{
      {M(MeasurementKind::kOs, "os", "os-1"), M(MeasurementKind::kApp, "os", "os-1")}};
  EXPECT_FALSE(EvaluateMeasurements(log, kRefs).passed);
}

TEST(AttestationPolicyTest, TheOsMustBeMeasured) {
  EXPECT_THAT(EvaluateMeasurements({}, kRefs).failures, ElementsAre(HasSubstr("no OS")));
  formats::MeasurementLog apps_only{{M(MeasurementKind::kApp, "app", "app-1")}};
  EXPECT_FALSE(EvaluateMeasurements(apps_only, kRefs).passed);
}

TEST(AttestationPolicyTest, MeasurementsMustSitInTheirRegisters) {
  formats::MeasurementLog log{{M(MeasurementKind::kOs, "os", "os-1", 3),
                               M(MeasurementKind::kBoot, "bootloader", "u-boot", 13),
                               M(MeasurementKind::kOs, "os", "os-1")}};
  auto v = EvaluateMeasurements(log, kRefs);
  EXPECT_FALSE(v.passed);
  EXPECT_EQ(v.failures.size(), 2u);
}

TEST(AttestationPolicyTest, FailureListIsBounded) {
  formats::MeasurementLog log;
  log.entries.push_back(M(MeasurementKind::kOs, "os", "os-1"));
  for (int i = 0; i < 100; ++i) {
    log.entries.push_back(M(MeasurementKind::kApp, "app", std::to_string(i)));
  }
  auto v = EvaluateMeasurements(log, kRefs);
  ASSERT_EQ(v.failures.size(), kMaxVerdictFailures + 1);
  EXPECT_THAT(v.failures.back(), HasSubstr("84 more"));
}

}  // namespace
}  // namespace moat::service
