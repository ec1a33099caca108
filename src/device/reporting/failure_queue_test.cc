#include "device/reporting/failure_queue.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/file.h"
#include "core/json.h"
#include "core/log.h"

namespace moat::device::reporting {
namespace {

using formats::FailureEvent;
using formats::FailureKind;
using formats::Guid;
using namespace std::chrono_literals;

const SystemTime kT0 = SystemTime(std::chrono::seconds(1'790'000'000));
constexpr char kComponentA[] = "a60a27ff-8936-4a49-b73f-70861db03d43";
constexpr char kComponentB[] = "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f";
constexpr char kImageId[] = "db81a79a-7ec4-435d-9cac-b2bfe2f2e38b";

FailureEvent Crash(Random& random, int signal = 11, const char* component = kComponentA,
                   SystemTime at = kT0) {
  FailureEvent e;
  e.event_id = random.NewUuid();
  e.kind = FailureKind::kAppCrash;
  e.component_id = *Guid::Parse(component);
  e.image_id = *Guid::Parse(kImageId);
  e.signal = signal;
  e.pc = 0x213ecc62;
  e.stack = {{.pc = 0x213ecc62, .module = "app", .build_id = "a1b2c3d4", .offset = 0x1c62},
             {.pc = 0x2136e6f7, .module = "libc.so.6", .offset = 0x4e6f7}};
  e.first_time = e.last_time = at;
  return e;
}

size_t JsonSize(const FailureEvent& e) { return DumpJson(formats::ToJson(e)).size(); }

std::filesystem::path EventFile(const std::filesystem::path& dir, uint64_t sequence) {
  return dir / fmt::format("{:020}.json", sequence);
}

// Routes the process-wide logger into a string for the life of the object.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

class FailureQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tmp = TempDir::Create("failure-queue-test");
    ASSERT_TRUE(tmp) << tmp.error().message();
    tmp_.emplace(std::move(*tmp));
    dir_ = tmp_->path() / "queue";
  }

  std::unique_ptr<FailureQueue> OpenQueue(FailureQueueOptions options = {}) {
    auto q = FailureQueue::Open(dir_, clock_, random_, options);
    EXPECT_TRUE(q) << q.error().message();
    return q ? std::move(*q) : nullptr;
  }

  // Everything queued, oldest first, without acknowledging.
  static std::vector<FailureEvent> Peek(FailureQueue& q) {
    auto batch = q.NextBatch(formats::kMaxEventBatchEvents, formats::kMaxEventBatchJsonBytes);
    EXPECT_TRUE(batch) << batch.error().message();
    return batch ? batch->events : std::vector<FailureEvent>{};
  }

  static std::vector<std::string> Ids(const std::vector<FailureEvent>& events) {
    std::vector<std::string> ids;
    for (const auto& e : events) ids.push_back(e.event_id);
    return ids;
  }

  std::optional<TempDir> tmp_;
  std::filesystem::path dir_;
  FakeClock clock_{kT0};
  FakeRandom random_{7};
};

TEST_F(FailureQueueTest, EventsSurviveReopenInOrderAndPrivate) {
  std::vector<FailureEvent> pushed;
  {
    auto q = OpenQueue();
    ASSERT_TRUE(q);
    for (int signal : {11, 6, 4}) {
      pushed.push_back(Crash(random_, signal, kComponentA, kT0 + std::chrono::seconds(signal)));
      auto id = q->Push(pushed.back());
      ASSERT_TRUE(id) << id.error().message();
      EXPECT_EQ(*id, pushed.back().event_id);
    }
    EXPECT_EQ(q->Stats().events, 3u);
  }
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  EXPECT_EQ(Peek(*q), pushed);
  EXPECT_EQ(q->Stats().events, 3u);
  EXPECT_EQ(q->Stats().dropped, 0u);

  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(::stat(EventFile(dir_, 1).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(FailureQueueTest, OpenTightensALooseDirectoryMode) {
  ASSERT_TRUE(MakeDirectories(dir_, 0755));
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST_F(FailureQueueTest, SecondOpenOfTheSameDirectoryIsRefused) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  auto second = FailureQueue::Open(dir_, clock_, random_);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), ErrorCode::kUnavailable);
  q.reset();
  EXPECT_TRUE(FailureQueue::Open(dir_, clock_, random_));
}

TEST_F(FailureQueueTest, ZeroBoundsAreRejected) {
  auto q = FailureQueue::Open(dir_, clock_, random_, {.max_events = 0});
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(FailureQueueTest, PushAssignsAnIdWhenMissing) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  FailureEvent e = Crash(random_);
  e.event_id.clear();
  auto id = q->Push(e);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_TRUE(Guid::Parse(*id));
  EXPECT_EQ(Ids(Peek(*q)), std::vector<std::string>{*id});
}

TEST_F(FailureQueueTest, PushRefusesWhatCouldNotBeReadBack) {
  auto q = OpenQueue({.max_bytes = 2000});
  ASSERT_TRUE(q);
  FailureEvent zero_count = Crash(random_);
  zero_count.count = 0;
  auto r = q->Push(zero_count);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("count"), std::string::npos) << r.error().message();

  FailureEvent dropped = Crash(random_);
  dropped.kind = FailureKind::kEventsDropped;
  r = q->Push(dropped);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);

  FailureEvent big = Crash(random_);
  big.stack.assign(60, {.pc = 1, .module = std::string(200, 'm'), .offset = 1});
  r = q->Push(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);

  EXPECT_EQ(q->Stats().events, 0u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 0);
}

TEST_F(FailureQueueTest, CountBoundDropsOldestAndCountsAcrossRestarts) {
  std::vector<std::string> ids;
  std::string dropped_id;
  {
    auto q = OpenQueue({.max_events = 3, .coalesce = false});
    ASSERT_TRUE(q);
    for (int i = 0; i < 5; ++i) {
      clock_.Advance(10s);
      auto id = q->Push(Crash(random_));
      ASSERT_TRUE(id) << id.error().message();
      ids.push_back(*id);
    }
    EXPECT_EQ(q->Stats().events, 3u);
    EXPECT_EQ(q->Stats().dropped, 2u);
  }
  auto q = OpenQueue({.max_events = 3, .coalesce = false});
  ASSERT_TRUE(q);
  EXPECT_EQ(q->Stats().dropped, 2u);
  clock_.Advance(10s);
  ASSERT_TRUE(q->Push(Crash(random_)));
  EXPECT_EQ(q->Stats().dropped, 3u);

  std::vector<FailureEvent> events = Peek(*q);
  ASSERT_EQ(events.size(), 4u);
  const FailureEvent& dropped = events[0];
  EXPECT_EQ(dropped.kind, FailureKind::kEventsDropped);
  EXPECT_EQ(dropped.count, 3u);
  EXPECT_TRUE(dropped.component_id.IsNil());
  EXPECT_EQ(dropped.first_time, kT0 + 40s);  // the 4th push dropped the 1st event
  EXPECT_EQ(dropped.last_time, kT0 + 60s);
  // The newest events survive, oldest first.
  EXPECT_EQ(events[1].event_id, ids[3]);
  EXPECT_EQ(events[2].event_id, ids[4]);
  EXPECT_EQ(events[3].kind, FailureKind::kAppCrash);
}

TEST_F(FailureQueueTest, ByteBoundDropsOldest) {
  const size_t one = JsonSize(Crash(random_));
  auto q = OpenQueue({.max_bytes = one * 5 / 2, .coalesce = false});
  ASSERT_TRUE(q);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto id = q->Push(Crash(random_));
    ASSERT_TRUE(id) << id.error().message();
    ids.push_back(*id);
  }
  QueueStats stats = q->Stats();
  EXPECT_EQ(stats.events, 2u);
  EXPECT_LE(stats.bytes, one * 5 / 2);
  EXPECT_EQ(stats.dropped, 2u);
  std::vector<FailureEvent> events = Peek(*q);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].count, 2u);
  EXPECT_EQ(events[1].event_id, ids[2]);
  EXPECT_EQ(events[2].event_id, ids[3]);
}

TEST_F(FailureQueueTest, LoweredBoundsApplyAtOpen) {
  {
    auto q = OpenQueue({.coalesce = false});
    ASSERT_TRUE(q);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(q->Push(Crash(random_)));
  }
  auto q = OpenQueue({.max_events = 2});
  ASSERT_TRUE(q);
  EXPECT_EQ(q->Stats().events, 2u);
  EXPECT_EQ(q->Stats().dropped, 3u);
}

TEST_F(FailureQueueTest, AcknowledgeRemovesExactlyTheBatch) {
  auto q = OpenQueue({.coalesce = false});
  ASSERT_TRUE(q);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(*q->Push(Crash(random_)));

  auto batch = q->NextBatch(2, formats::kMaxEventBatchJsonBytes);
  ASSERT_TRUE(batch) << batch.error().message();
  EXPECT_EQ(Ids(batch->events), (std::vector<std::string>{ids[0], ids[1]}));

  // An upload that failed leaves the events queued: asking again gives the same ones.
  auto again = q->NextBatch(2, formats::kMaxEventBatchJsonBytes);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->events, batch->events);

  // Pushed while the batch is out: must survive its acknowledgement.
  ids.push_back(*q->Push(Crash(random_)));
  ASSERT_TRUE(q->Acknowledge(batch->token));
  EXPECT_EQ(Ids(Peek(*q)), (std::vector<std::string>{ids[2], ids[3], ids[4], ids[5]}));
  EXPECT_FALSE(std::filesystem::exists(EventFile(dir_, 1)));
  EXPECT_TRUE(std::filesystem::exists(EventFile(dir_, 3)));

  // Acknowledging twice changes nothing.
  ASSERT_TRUE(q->Acknowledge(batch->token));
  EXPECT_EQ(q->Stats().events, 4u);

  q.reset();
  q = OpenQueue();
  ASSERT_TRUE(q);
  EXPECT_EQ(Ids(Peek(*q)), (std::vector<std::string>{ids[2], ids[3], ids[4], ids[5]}));
}

TEST_F(FailureQueueTest, TokenFromAnotherQueueIsRefused) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  ASSERT_TRUE(q->Push(Crash(random_)));
  auto batch = q->NextBatch(10, formats::kMaxEventBatchJsonBytes);
  ASSERT_TRUE(batch);
  q.reset();
  q = OpenQueue();
  ASSERT_TRUE(q);
  auto r = q->Acknowledge(batch->token);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(q->Stats().events, 1u);
}

TEST_F(FailureQueueTest, BatchRespectsByteLimitButAlwaysTakesOneEvent) {
  auto q = OpenQueue({.coalesce = false});
  ASSERT_TRUE(q);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(q->Push(Crash(random_)));
  const size_t one = JsonSize(Crash(random_));
  const size_t limit = 13 + 3 * (one + 1);  // room for three events and their commas, not four
  auto batch = q->NextBatch(100, limit);
  ASSERT_TRUE(batch);
  EXPECT_EQ(batch->events.size(), 3u);
  EXPECT_LE(formats::SerializeFailureEventBatch(batch->events).size(), limit);
  EXPECT_EQ(q->NextBatch(100, limit + 1 + one)->events.size(), 4u);

  auto tiny = q->NextBatch(100, 10);
  ASSERT_TRUE(tiny);
  EXPECT_EQ(tiny->events.size(), 1u);
  EXPECT_TRUE(q->NextBatch(0, 1 << 20)->events.empty());
}

TEST_F(FailureQueueTest, DroppedRecordIsFrozenWhileOutAndRestartsAfterAck) {
  auto q = OpenQueue({.max_events = 2, .coalesce = false});
  ASSERT_TRUE(q);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q->Push(Crash(random_)));  // drops 2
  auto batch = q->NextBatch(10, formats::kMaxEventBatchJsonBytes);
  ASSERT_TRUE(batch);
  ASSERT_EQ(batch->events.size(), 3u);
  const FailureEvent sealed = batch->events[0];
  EXPECT_EQ(sealed.kind, FailureKind::kEventsDropped);
  EXPECT_EQ(sealed.count, 2u);

  // Three more drops while the batch is out (the batch's two events among them).
  clock_.Advance(5s);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(q->Push(Crash(random_)));
  EXPECT_EQ(q->Stats().dropped, 5u);

  // A retry (also after a restart) carries the same count under the same id.
  q.reset();
  q = OpenQueue({.max_events = 2, .coalesce = false});
  ASSERT_TRUE(q);
  auto retry = q->NextBatch(10, formats::kMaxEventBatchJsonBytes);
  ASSERT_TRUE(retry);
  ASSERT_EQ(retry->events.size(), 3u);
  EXPECT_EQ(retry->events[0], sealed);

  ASSERT_TRUE(q->Acknowledge(retry->token));
  EXPECT_EQ(q->Stats().dropped, 3u);
  EXPECT_EQ(q->Stats().events, 0u);
  q.reset();
  q = OpenQueue({.max_events = 2, .coalesce = false});
  ASSERT_TRUE(q);
  std::vector<FailureEvent> rest = Peek(*q);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].kind, FailureKind::kEventsDropped);
  EXPECT_EQ(rest[0].count, 3u);
  EXPECT_NE(rest[0].event_id, sealed.event_id);
  EXPECT_EQ(rest[0].first_time, kT0 + 5s);
}

TEST_F(FailureQueueTest, IdenticalCrashesCoalesceIntoTheNewestUnsentEvent) {
  auto q = OpenQueue();
  ASSERT_TRUE(q);
  auto first = q->Push(Crash(random_, 11, kComponentA, kT0));
  ASSERT_TRUE(first);
  ASSERT_TRUE(q->Push(Crash(random_, 11, kComponentB, kT0 + 1s)));  // another app
  auto second = q->Push(Crash(random_, 11, kComponentA, kT0 + 2s));
  auto third = q->Push(Crash(random_, 11, kComponentA, kT0 + 3s));
  ASSERT_TRUE(second && third);
  EXPECT_EQ(*second, *first);
  EXPECT_EQ(*third, *first);
  auto other_signal = q->Push(Crash(random_, 6, kComponentA, kT0 + 4s));
  ASSERT_TRUE(other_signal);
  EXPECT_NE(*other_signal, *first);
  FailureEvent other_stack = Crash(random_, 11, kComponentA, kT0 + 5s);
  other_stack.stack[0].offset = 0x2000;
  EXPECT_NE(*q->Push(other_stack), *first);

  std::vector<FailureEvent> events = Peek(*q);  // hands them all out
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].event_id, *first);
  EXPECT_EQ(events[0].count, 3u);
  EXPECT_EQ(events[0].first_time, kT0);
  EXPECT_EQ(events[0].last_time, kT0 + 3s);
  EXPECT_EQ(q->Stats().bytes, [&] {
    size_t sum = 0;
    for (const auto& e : events) sum += JsonSize(e);
    return sum;
  }());

  // Handed out: the service may hold it already, so a repeat becomes a new event.
  auto after_batch = q->Push(Crash(random_, 11, kComponentA, kT0 + 6s));
  ASSERT_TRUE(after_batch);
  EXPECT_NE(*after_batch, *first);

  // After a restart nothing is known about what was sent: no merging into old events.
  q.reset();
  q = OpenQueue();
  ASSERT_TRUE(q);
  auto after_restart = q->Push(Crash(random_, 11, kComponentA, kT0 + 7s));
  ASSERT_TRUE(after_restart);
  EXPECT_NE(*after_restart, *after_batch);
  EXPECT_EQ(q->Stats().events, 6u);
}

TEST_F(FailureQueueTest, CoalescingCanBeTurnedOff) {
  auto q = OpenQueue({.coalesce = false});
  ASSERT_TRUE(q);
  auto a = q->Push(Crash(random_));
  auto b = q->Push(Crash(random_));
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(q->Stats().events, 2u);
}

TEST_F(FailureQueueTest, TornAndCorruptRecordsAreDiscardedWithAWarning) {
  std::vector<std::string> ids;
  {
    auto q = OpenQueue({.coalesce = false});
    ASSERT_TRUE(q);
    for (int i = 0; i < 5; ++i) ids.push_back(*q->Push(Crash(random_)));
  }
  // Newest record torn in half, one overwritten with garbage, one emptied; the leftover of a
  // write interrupted before its rename; a record of the wrong kind; a stranger's file.
  std::filesystem::resize_file(EventFile(dir_, 5),
                               std::filesystem::file_size(EventFile(dir_, 5)) / 2);
  ASSERT_TRUE(AtomicWriteFile(EventFile(dir_, 3), std::string_view("\x01\xff garbage")));
  std::filesystem::resize_file(EventFile(dir_, 4), 0);
  const auto temp = dir_ / ".00000000000000000006.json.tmp-0123456789abcdef";
  ASSERT_TRUE(AtomicWriteFile(temp, std::string_view("{\"event_id\":")));
  FailureEvent wrong_kind = Crash(random_);
  wrong_kind.kind = FailureKind::kEventsDropped;
  ASSERT_TRUE(AtomicWriteFile(EventFile(dir_, 9), DumpJson(formats::ToJson(wrong_kind))));
  ASSERT_TRUE(AtomicWriteFile(dir_ / "README", std::string_view("not ours")));

  LogCapture log;
  auto q = OpenQueue({.coalesce = false});
  ASSERT_TRUE(q);
  EXPECT_EQ(q->recovery().temp_files_removed, 1u);
  EXPECT_EQ(q->recovery().corrupt_records_discarded, 4u);
  EXPECT_EQ(q->recovery().unknown_entries, 1u);
  EXPECT_NE(log.text().find("discarding unreadable record " + EventFile(dir_, 5).string()),
            std::string::npos)
      << log.text();
  EXPECT_NE(log.text().find("interrupted write"), std::string::npos) << log.text();

  EXPECT_FALSE(std::filesystem::exists(temp));
  EXPECT_FALSE(std::filesystem::exists(EventFile(dir_, 5)));
  EXPECT_FALSE(std::filesystem::exists(EventFile(dir_, 9)));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "README"));

  // The older events are intact, and the lost ones are reported as dropped.
  std::vector<FailureEvent> events = Peek(*q);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].kind, FailureKind::kEventsDropped);
  EXPECT_EQ(events[0].count, 4u);
  EXPECT_EQ(events[1].event_id, ids[0]);
  EXPECT_EQ(events[2].event_id, ids[1]);

  // New events do not reuse a sequence number that was seen on disk.
  ASSERT_TRUE(q->Push(Crash(random_)));
  EXPECT_TRUE(std::filesystem::exists(EventFile(dir_, 10)));
}

TEST_F(FailureQueueTest, CorruptDroppedRecordDoesNotStopTheQueue) {
  {
    auto q = OpenQueue({.max_events = 1});
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->Push(Crash(random_, 11)));
    ASSERT_TRUE(q->Push(Crash(random_, 6)));
    ASSERT_EQ(q->Stats().dropped, 1u);
  }
  ASSERT_TRUE(AtomicWriteFile(dir_ / "dropped.json", std::string_view("{")));
  auto q = OpenQueue({.max_events = 1});
  ASSERT_TRUE(q);
  EXPECT_EQ(q->recovery().corrupt_records_discarded, 1u);
  EXPECT_EQ(q->Stats().events, 1u);
  EXPECT_EQ(q->Stats().dropped, 0u);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "dropped.json"));
}

TEST_F(FailureQueueTest, RecordCorruptedWhileOpenIsDiscardedByNextBatch) {
  auto q = OpenQueue({.coalesce = false});
  ASSERT_TRUE(q);
  auto a = q->Push(Crash(random_));
  ASSERT_TRUE(q->Push(Crash(random_)));
  auto c = q->Push(Crash(random_));
  std::filesystem::resize_file(EventFile(dir_, 2), 7);
  LogCapture log;
  std::vector<FailureEvent> events = Peek(*q);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].event_id, *a);
  EXPECT_EQ(events[1].event_id, *c);
  EXPECT_NE(log.text().find("discarding unreadable record"), std::string::npos);
  EXPECT_EQ(q->Stats().events, 2u);
  EXPECT_EQ(q->Stats().dropped, 1u);
}

TEST_F(FailureQueueTest, ConcurrentPushersAndUploaderLoseNothing) {
  auto q = OpenQueue({.coalesce = false});
  ASSERT_TRUE(q);
  constexpr int kThreads = 4, kPerThread = 25;
  std::atomic<bool> done{false};
  std::set<std::string> pushed, uploaded;
  std::mutex pushed_mu;
  std::vector<std::thread> pushers;
  for (int t = 0; t < kThreads; ++t) {
    pushers.emplace_back([&, t] {
      FakeRandom r(100 + t);
      for (int i = 0; i < kPerThread; ++i) {
        auto id = q->Push(Crash(r));
        std::lock_guard lock(pushed_mu);
        if (id) pushed.insert(*id);
      }
    });
  }
  std::thread uploader([&] {
    for (;;) {
      const bool last = done.load();
      auto batch = q->NextBatch(7, formats::kMaxEventBatchJsonBytes);
      if (!batch) continue;
      for (const auto& e : batch->events) uploaded.insert(e.event_id);
      if (!q->Acknowledge(batch->token)) continue;
      if (last && batch->events.empty()) return;
    }
  });
  for (auto& t : pushers) t.join();
  done = true;
  uploader.join();
  EXPECT_EQ(pushed.size(), size_t{kThreads * kPerThread});
  EXPECT_EQ(uploaded, pushed);
  EXPECT_EQ(q->Stats().events, 0u);
}

// The real thing: a child process pushes events as fast as it can and is SIGKILLed at random
// moments (mostly inside a write or fsync, where Push spends its time). Every event whose Push
// returned — the child writes its id to a pipe right after — must be there after reopening,
// and no record may be corrupt. (SIGKILL keeps the page cache, so this exercises the
// write/rename ordering, not the fsyncs; those are AtomicWriteFile's contract.)
TEST_F(FailureQueueTest, SigkilledPusherLosesNoAcknowledgedEvent) {
  const FailureQueueOptions options{
      .max_events = 100000, .max_bytes = size_t{64} << 20, .coalesce = false};
  std::set<std::string> acknowledged;
  size_t temp_files_seen = 0;
  FakeRandom timing(42);
  for (int round = 0; round < 8; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      SystemRandom r;
      SystemClock clock;
      auto q = FailureQueue::Open(dir_, clock, r, options);
      if (!q) ::_exit(2);
      for (int i = 0; i < 100000; ++i) {
        auto id = (*q)->Push(Crash(r, 1 + i % 64));
        if (!id) ::_exit(3);
        std::string line = *id + "\n";  // < PIPE_BUF, so written whole or not at all
        if (!WriteAll(fds[1],
                      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(line.data()),
                                               line.size()),
                      "pipe")) {
          ::_exit(4);
        }
      }
      ::_exit(0);
    }
    ::close(fds[1]);
    ::usleep(static_cast<useconds_t>(20'000 + timing.Uniform(150'000)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child ended on its own, status " << status;
    auto bytes = ReadAll(fds[0], 64 << 20, "pipe");
    ::close(fds[0]);
    ASSERT_TRUE(bytes);
    std::istringstream lines(std::string(bytes->begin(), bytes->end()));
    for (std::string id; std::getline(lines, id);) acknowledged.insert(id);

    auto q = OpenQueue(options);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->recovery().corrupt_records_discarded, 0u) << "round " << round;
    temp_files_seen += q->recovery().temp_files_removed;
    // Read the files directly (NextBatch stops at 1000 events): every record must parse.
    std::set<std::string> present;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      const std::string name = entry.path().filename().string();
      ASSERT_TRUE(name.size() == 25 && name.ends_with(".json")) << "leftover " << name;
      auto text = ReadFile(entry.path(), formats::kMaxEventJsonBytes);
      ASSERT_TRUE(text) << text.error().message();
      auto e = formats::ParseFailureEvent(*text);
      ASSERT_TRUE(e) << name << ": " << e.error().message();
      present.insert(e->event_id);
    }
    EXPECT_EQ(present.size(), q->Stats().events);
    for (const auto& id : acknowledged) {
      ASSERT_TRUE(present.contains(id)) << "round " << round << ": lost acknowledged " << id;
    }
    EXPECT_EQ(q->Stats().dropped, 0u);
  }
  // The test means something only if the child got going.
  EXPECT_GT(acknowledged.size(), 8u);
  RecordProperty("acknowledged", static_cast<int>(acknowledged.size()));
  RecordProperty("temp_files_removed", static_cast<int>(temp_files_seen));
}

}  // namespace
}  // namespace moat::device::reporting
