#include "device/agent/schedule.h"

#include <gtest/gtest.h>

namespace moat::device::agent {
namespace {

using namespace std::chrono_literals;

const SystemTime kT0 = std::chrono::sys_days(std::chrono::year(2026) / 11 / 27);

TEST(ScheduleTest, RenewsAroundEightyPercentWithinTheJitter) {
  FakeRandom random(7);
  AttestationScheduler s({}, random);
  SystemTime earliest = kT0 + 48h, latest = kT0;
  for (int i = 0; i < 1000; ++i) {
    SystemTime at = s.AfterSuccess(kT0, kT0, kT0 + 24h);
    earliest = std::min(earliest, at);
    latest = std::max(latest, at);
    ASSERT_GE(at, kT0 + 24h * 0.7 - 1ms);
    ASSERT_LE(at, kT0 + 24h * 0.9 + 1ms);
  }
  // The jitter really spreads: over 1000 draws the range covers most of +-10%.
  EXPECT_LT(earliest, kT0 + 24h * 0.72);
  EXPECT_GT(latest, kT0 + 24h * 0.88);
}

TEST(ScheduleTest, BackoffDoublesUpToTheCapAndResetsOnSuccess) {
  FakeRandom random(3);
  AttestationSchedule cfg{.retry_initial = 5s, .retry_max = 60s};
  AttestationScheduler s(cfg, random);
  const std::chrono::seconds expected[] = {5s, 10s, 20s, 40s, 60s, 60s};
  for (auto step : expected) {
    auto delay = s.AfterFailure(kT0) - kT0;
    EXPECT_GE(delay, step / 2);
    EXPECT_LE(delay, step);
  }
  EXPECT_EQ(s.consecutive_failures(), 6);
  (void)s.AfterSuccess(kT0, kT0, kT0 + 24h);
  EXPECT_EQ(s.consecutive_failures(), 0);
  EXPECT_LE(s.AfterFailure(kT0) - kT0, 5s);
}

TEST(ScheduleTest, NeverInThePastNorAfterExpiry) {
  FakeRandom random(1);
  AttestationScheduler s({}, random);
  // A certificate already 95% through its life: attest (almost) at once.
  SystemTime now = kT0 + 23h;
  SystemTime at = s.AfterSuccess(now, kT0, kT0 + 24h);
  EXPECT_GE(at, now + 1s);
  EXPECT_LE(at, kT0 + 24h);
}

}  // namespace
}  // namespace moat::device::agent
