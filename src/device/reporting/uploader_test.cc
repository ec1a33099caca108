#include "device/reporting/uploader.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/file.h"

namespace moat::device::reporting {
namespace {

using formats::FailureEvent;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

const SystemTime kT0 = SystemTime(std::chrono::seconds(1'790'000'000));

FailureEvent Exit(Random& random, int status) {
  FailureEvent e;
  e.event_id = random.NewUuid();
  e.kind = formats::FailureKind::kAppExit;
  e.component_id = *formats::Guid::Parse("a60a27ff-8936-4a49-b73f-70861db03d43");
  e.exit_status = status;
  e.first_time = e.last_time = kT0;
  return e;
}

// A Random whose NextU64() is always `value` (NextU64 reads 8 bytes big-endian), so that
// Uniform(bound) returns `value` for any bound above it.
class FixedRandom final : public Random {
 public:
  explicit FixedRandom(uint64_t value) : value_(value) {}
  void Fill(std::span<uint8_t> out) override {
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = i < 8 ? static_cast<uint8_t>(value_ >> (8 * (7 - i))) : 0;
    }
  }

 private:
  uint64_t value_;
};

class UploaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tmp = TempDir::Create("uploader-test");
    ASSERT_TRUE(tmp) << tmp.error().message();
    tmp_.emplace(std::move(*tmp));
    auto q = FailureQueue::Open(tmp_->path() / "queue", clock_, random_, {.coalesce = false});
    ASSERT_TRUE(q) << q.error().message();
    queue_ = std::move(*q);
  }

  milliseconds Pending(const Uploader& u) const {
    return std::chrono::duration_cast<milliseconds>(u.NextAttemptAt() - clock_.Monotonic());
  }

  std::optional<TempDir> tmp_;
  FakeClock clock_{kT0};
  FakeRandom random_{3};
  std::unique_ptr<FailureQueue> queue_;
};

Result<void> NeverCalled(std::span<const FailureEvent>) {
  ADD_FAILURE() << "send called";
  return Ok();
}

TEST_F(UploaderTest, BackoffDoublesAndCapsWithoutJitter) {
  Uploader u(*queue_, NeverCalled, clock_, random_,
             {.initial_delay = 1s, .max_delay = 10s, .jitter = 0});
  EXPECT_TRUE(u.Due());
  std::vector<milliseconds> delays;
  for (int i = 0; i < 7; ++i) {
    u.OnFailure();
    delays.push_back(Pending(u));
    EXPECT_FALSE(u.Due());
  }
  EXPECT_EQ(delays, (std::vector<milliseconds>{1s, 2s, 4s, 8s, 10s, 10s, 10s}));
  EXPECT_EQ(u.consecutive_failures(), 7u);
  clock_.Advance(10s);
  EXPECT_TRUE(u.Due());
}

TEST_F(UploaderTest, SuccessResetsTheSchedule) {
  Uploader u(*queue_, NeverCalled, clock_, random_,
             {.initial_delay = 1s, .max_delay = 1h, .jitter = 0});
  for (int i = 0; i < 5; ++i) u.OnFailure();
  EXPECT_EQ(Pending(u), 16s);
  u.OnSuccess();
  EXPECT_TRUE(u.Due());
  EXPECT_EQ(u.consecutive_failures(), 0u);
  u.OnFailure();
  EXPECT_EQ(Pending(u), 1s);
}

TEST_F(UploaderTest, JitterStaysWithinItsShareAndBelowTheCap) {
  // The extremes: a draw of 0 takes nothing off, the largest draw (500 of 0..500 ms) half.
  FixedRandom low(0), high(500);
  Uploader none_off(*queue_, NeverCalled, clock_, low,
                    {.initial_delay = 1s, .max_delay = 8s, .jitter = 0.5});
  Uploader most_off(*queue_, NeverCalled, clock_, high,
                    {.initial_delay = 1s, .max_delay = 8s, .jitter = 0.5});
  none_off.OnFailure();
  most_off.OnFailure();
  EXPECT_EQ(Pending(none_off), 1000ms);
  EXPECT_EQ(Pending(most_off), 500ms);

  // Across many devices: every delay in [base/2, base], and spread out.
  std::set<milliseconds::rep> first_delays;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    FakeRandom r(seed);
    Uploader u(*queue_, NeverCalled, clock_, r,
               {.initial_delay = 1s, .max_delay = 8s, .jitter = 0.5});
    milliseconds base = 1s;
    for (int i = 0; i < 6; ++i) {
      u.OnFailure();
      milliseconds d = Pending(u);
      EXPECT_GE(d, base / 2) << "seed " << seed << " failure " << i;
      EXPECT_LE(d, base) << "seed " << seed << " failure " << i;
      if (i == 0) first_delays.insert(d.count());
      base = std::min<milliseconds>(base * 2, 8s);
    }
  }
  EXPECT_GT(first_delays.size(), 100u);
}

TEST_F(UploaderTest, EmptyQueueSendsNothingAndKeepsTheSchedule) {
  Uploader u(*queue_, NeverCalled, clock_, random_, {.initial_delay = 1s, .jitter = 0});
  u.OnFailure();
  auto n = u.UploadOnce();
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(Pending(u), 1s);
}

TEST_F(UploaderTest, FailedSendKeepsEventsAndRetriesWithTheSameIds) {
  std::vector<std::string> pushed;
  for (int status = 1; status <= 5; ++status)
    pushed.push_back(*queue_->Push(Exit(random_, status)));

  // The service stores by event_id; the first response gets lost on the way back.
  std::map<std::string, FailureEvent> service;
  std::vector<std::vector<std::string>> requests;
  bool lose_response = true;
  auto send = [&](std::span<const FailureEvent> events) -> Result<void> {
    requests.emplace_back();
    for (const auto& e : events) {
      requests.back().push_back(e.event_id);
      service.emplace(e.event_id, e);
    }
    if (lose_response) {
      lose_response = false;
      return Fail(ErrorCode::kUnavailable, "connection reset");
    }
    return Ok();
  };
  Uploader u(*queue_, send, clock_, random_,
             {.initial_delay = 2s, .jitter = 0, .max_batch_events = 3});

  auto first = u.UploadOnce();
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(first.error().message().find("connection reset"), std::string::npos);
  EXPECT_EQ(queue_->Stats().events, 5u);
  EXPECT_FALSE(u.Due());
  EXPECT_EQ(Pending(u), 2s);

  clock_.Advance(2s);
  ASSERT_TRUE(u.Due());
  auto second = u.UploadOnce();
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(*second, 3u);
  EXPECT_EQ(requests[1], requests[0]);  // the retry re-sends the same events, same ids
  EXPECT_TRUE(u.Due());
  EXPECT_EQ(u.consecutive_failures(), 0u);

  auto third = u.UploadOnce();
  ASSERT_TRUE(third);
  EXPECT_EQ(*third, 2u);
  EXPECT_EQ(queue_->Stats().events, 0u);
  EXPECT_EQ(service.size(), 5u);  // nothing stored twice, nothing missing
  for (const auto& id : pushed) EXPECT_TRUE(service.contains(id)) << id;
}

}  // namespace
}  // namespace moat::device::reporting
