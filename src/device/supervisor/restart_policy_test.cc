// The restart policy alone: backoff, its reset after a stable run, crash-loop detection.
#include "device/supervisor/restart_policy.h"

#include <gtest/gtest.h>

namespace moat::device::supervisor {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using TimePoint = RestartTracker::TimePoint;

RestartPolicy Policy() {
  RestartPolicy p;
  p.base_delay = seconds(1);
  p.max_delay = seconds(10);
  p.stable_after = seconds(60);
  p.crash_loop_crashes = 3;
  p.crash_loop_window = seconds(100);
  return p;
}

TEST(RestartPolicyTest, DefaultsAreValidAndNonsenseIsRefused) {
  EXPECT_TRUE(RestartPolicy{}.Validate());
  EXPECT_EQ(RestartPolicy{}.base_delay, seconds(1));
  EXPECT_EQ(RestartPolicy{}.max_delay, seconds(300));
  RestartPolicy p;
  p.base_delay = milliseconds(0);
  EXPECT_EQ(p.Validate().error().code(), ErrorCode::kInvalidArgument);
  p = {};
  p.max_delay = milliseconds(10);
  EXPECT_FALSE(p.Validate());
  p = {};
  p.crash_loop_crashes = 0;
  EXPECT_FALSE(p.Validate());
}

TEST(RestartPolicyTest, DelaysDoubleUpToTheCap) {
  RestartTracker t(Policy());
  TimePoint now{};
  std::vector<milliseconds> delays;
  for (int i = 0; i < 7; ++i) {
    t.OnStarted(now);
    now += seconds(2);  // a short run
    auto d = t.OnEnded(now, /*failure=*/false);
    delays.push_back(d.delay);
    now += d.delay;
  }
  EXPECT_EQ(delays, (std::vector<milliseconds>{seconds(1), seconds(2), seconds(4), seconds(8),
                                               seconds(10), seconds(10), seconds(10)}));
  EXPECT_EQ(t.consecutive_restarts(), 7u);
}

TEST(RestartPolicyTest, AStableRunResetsTheBackoff) {
  RestartTracker t(Policy());
  TimePoint now{};
  for (int i = 0; i < 4; ++i) {
    t.OnStarted(now);
    now += seconds(1);
    now += t.OnEnded(now, true).delay;
  }
  t.OnStarted(now);
  now += seconds(59);
  EXPECT_EQ(t.OnEnded(now, false).delay, seconds(10)) << "59 s is not stable: 16 s, capped";
  t.OnStarted(now);
  now += seconds(60);
  EXPECT_EQ(t.OnEnded(now, false).delay, seconds(1)) << "60 s is";
}

TEST(RestartPolicyTest, LaunchFailuresBackOffToo) {
  RestartTracker t(Policy());
  TimePoint now{};
  EXPECT_EQ(t.OnEnded(now, true).delay, seconds(1));
  EXPECT_EQ(t.OnEnded(now, true).delay, seconds(2));
}

TEST(RestartPolicyTest, NCrashesWithinTheWindowAreACrashLoopReportedOnce) {
  RestartTracker t(Policy());
  TimePoint now{};
  EXPECT_FALSE(t.OnEnded(now, true).crash_loop);
  now += seconds(10);
  EXPECT_FALSE(t.OnEnded(now, false).crash_loop) << "a clean exit is not a crash";
  EXPECT_FALSE(t.OnEnded(now, true).crash_loop);
  now += seconds(89);
  EXPECT_TRUE(t.OnEnded(now, true).crash_loop) << "3 within 99 s";
  // Reported once: the next report needs three more.
  now += seconds(1);
  EXPECT_FALSE(t.OnEnded(now, true).crash_loop);
  EXPECT_FALSE(t.OnEnded(now, true).crash_loop);
  EXPECT_TRUE(t.OnEnded(now, true).crash_loop);
}

TEST(RestartPolicyTest, CrashesSpreadWiderThanTheWindowAreNot) {
  RestartTracker t(Policy());
  TimePoint now{};
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(t.OnEnded(now, true).crash_loop) << i;
    now += seconds(50);  // the third is always 100 s after the first: outside the window
  }
}

}  // namespace
}  // namespace moat::device::supervisor
