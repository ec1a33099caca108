#include "core/clock.h"

#include <gtest/gtest.h>

namespace moat {
namespace {

TEST(ClockTest, Rfc3339RoundTrips) {
  auto t = ParseRfc3339("2026-11-27T19:46:27Z");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(FormatRfc3339(*t), "2026-11-27T19:46:27Z");
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*t), 1795808787);
  auto frac = ParseRfc3339("2026-11-27T19:46:27.123456Z");
  ASSERT_TRUE(frac);
  EXPECT_EQ(*frac, *t);
}

TEST(ClockTest, Rfc3339RejectsMalformed) {
  for (const char* bad :
       {"", "2026-11-27", "2026-11-27T19:46:27", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
        "2026-11-27T19:46:27+01:00", "2026-11-27T19:46:27.Z", "20x6-11-27T19:46:27Z"}) {
    auto r = ParseRfc3339(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    }
  }
}

TEST(ClockTest, Rfc3339HandlesTheEndsOfTheRange) {
  // TPM EK certificates say "valid until 9999-12-31"; that must not overflow.
  auto far = ParseRfc3339("9999-12-31T23:59:59Z");
  ASSERT_TRUE(far);
  EXPECT_EQ(*far, SystemTime::max());
  auto before_epoch = ParseRfc3339("1969-12-31T23:59:59Z");
  ASSERT_FALSE(before_epoch);
  EXPECT_EQ(before_epoch.error().code(), ErrorCode::kInvalidArgument);
}

TEST(ClockTest, FakeClockMovesOnlyWhenTold) {
  auto start = *ParseRfc3339("2030-01-01T00:00:00Z");
  FakeClock clock(start);
  EXPECT_EQ(clock.Now(), start);
  auto m0 = clock.Monotonic();
  clock.Advance(std::chrono::hours(25));
  EXPECT_EQ(FormatRfc3339(clock.Now()), "2030-01-02T01:00:00Z");
  EXPECT_EQ(clock.Monotonic() - m0, std::chrono::hours(25));
}

}  // namespace
}  // namespace moat
