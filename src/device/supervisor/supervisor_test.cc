// The supervisor over real sandboxes (as root, as CI runs it): the hostile test app of the
// sandbox tests crashes, exits, hogs memory or ignores SIGTERM on command. Restart timing runs on
// a FakeClock, so delays are asserted exactly and nothing sleeps for them.
#include "device/supervisor/supervisor.h"

#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "device/sandbox/app_network.h"
#include "device/sandbox/host_tool.h"
#include "device/sandbox/testdata/elf_symbols.h"

namespace moat::device::supervisor {
namespace {

using sandbox::ExitStatus;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;

formats::Guid G(std::string_view text) { return *formats::Guid::Parse(text); }

const formats::Guid kAppA = G("aaaaaaaa-0000-4000-8000-000000000001");
const formats::Guid kAppB = G("bbbbbbbb-0000-4000-8000-000000000002");
const formats::Guid kAppC = G("cccccccc-0000-4000-8000-000000000003");
const formats::Guid kImage = G("11111111-2222-4333-8444-555555555555");

bool ProcessExists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "supervisor tests run real sandboxes and need root";
    auto dir = TempDir::Create("moat-supervisor-test");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    image_ = dir_->path() / "image";
    ASSERT_TRUE(MakeDirectories(image_ / "bin"));
    std::filesystem::copy_file(MOAT_SANDBOX_TEST_APP, image_ / "bin" / "test_app");
    std::filesystem::permissions(image_ / "bin" / "test_app", std::filesystem::perms(0755));
    instance_ = fmt::format("sup{}", getpid());
    auto layout = sandbox::DetectCgroupLayout();
    ASSERT_TRUE(layout) << layout.error().message();
    layout_ = *layout;
    options_.clock = clock_;
    options_.cgroup_layout = layout_;
    options_.restart.base_delay = seconds(1);
    options_.restart.max_delay = seconds(4);
    options_.restart.stable_after = seconds(60);
    options_.restart.crash_loop_crashes = 100;
    options_.restart.crash_loop_window = seconds(600);
    options_.stop_grace = milliseconds(300);
    options_.on_failure = [this](const formats::FailureEvent& e) {
      std::lock_guard lock(mu_);
      events_.push_back(e);
      cv_.notify_all();
    };
    options_.on_crash_loop = [this](const formats::Guid& id) {
      std::lock_guard lock(mu_);
      crash_loops_.push_back(id);
      cv_.notify_all();
    };
  }

  void TearDown() override {
    supervisor_.reset();  // Shutdown
    if (!layout_) return;
    for (const auto* c : {&layout_->memory, &layout_->pids}) {
      EXPECT_FALSE(std::filesystem::exists(c->Base() / ("moat-" + instance_)))
          << "cgroup left behind under " << c->Base();
    }
    EXPECT_TRUE(sandbox::RemoveInstanceCgroups(*layout_, instance_));
  }

  void Start() {
    auto s = Supervisor::Create(options_);
    ASSERT_TRUE(s) << s.error().message();
    supervisor_ = std::move(*s);
  }

  SupervisedApp App(const formats::Guid& id, std::vector<std::string> args) {
    SupervisedApp app;
    app.component_id = id;
    app.image_id = kImage;
    app.spec.instance_id = instance_;
    app.spec.app_name = id.ToString();
    app.spec.executable = "/bin/test_app";
    app.spec.args = std::move(args);
    app.spec.env = {"PATH=/bin"};
    app.spec.uid = app.spec.gid = 61300 + static_cast<uid_t>(id.bytes()[15]);
    app.spec.root_image = image_;
    app.spec.limits.memory_bytes = 32 << 20;
    app.spec.limits.pids_max = 16;
    app.spec.stdout_path = dir_->path() / (id.ToString() + ".out");
    app.spec.stderr_path = dir_->path() / (id.ToString() + ".err");
    return app;
  }

  // Waits (real time, bounded) until `pred` holds over the supervisor's state.
  template <typename Pred>
  bool WaitUntil(Pred pred, milliseconds timeout = milliseconds(20000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }
  bool WaitForEvents(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(20), [&] { return events_.size() >= n; });
  }
  size_t EventCount() {
    std::lock_guard lock(mu_);
    return events_.size();
  }
  AppStatus StatusOf(const formats::Guid& id) {
    auto s = supervisor_->Status(id);
    EXPECT_TRUE(s) << id.ToString();
    return s.value_or(AppStatus{});
  }
  bool Running(const formats::Guid& id) {
    auto s = supervisor_->Status(id);
    return s && s->state == AppState::kRunning;
  }
  // Moves the fake clock to `id`'s restart time and wakes the loop.
  void AdvanceToRestart(const formats::Guid& id) {
    AppStatus s = StatusOf(id);
    ASSERT_TRUE(s.next_start);
    clock_->Advance(*s.next_start - clock_->Monotonic());
    supervisor_->Wake();
  }

  std::optional<TempDir> dir_;
  std::filesystem::path image_;
  std::string instance_;
  std::optional<sandbox::CgroupLayout> layout_;
  std::shared_ptr<FakeClock> clock_ =
      std::make_shared<FakeClock>(*ParseRfc3339("2026-11-27T12:00:00Z"));
  SupervisorOptions options_;
  std::unique_ptr<Supervisor> supervisor_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<formats::FailureEvent> events_;
  std::vector<formats::Guid> crash_loops_;
};

TEST_F(SupervisorTest, ACrashingAppIsRestartedWithGrowingDelaysAndEachCrashIsReported) {
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"crash"})));
  const std::vector<milliseconds> expected = {seconds(1), seconds(2), seconds(4), seconds(4)};
  for (size_t k = 0; k < expected.size(); ++k) {
    ASSERT_TRUE(WaitForEvents(k + 1)) << "crash " << k;
    formats::FailureEvent e;
    {
      std::lock_guard lock(mu_);
      e = events_[k];
    }
    EXPECT_EQ(e.kind, formats::FailureKind::kAppCrash);
    EXPECT_EQ(e.signal, SIGSEGV);
    EXPECT_EQ(e.component_id, kAppA);
    EXPECT_EQ(e.image_id, kImage);
    EXPECT_EQ(e.type, formats::EventType::kUnplanned);
    EXPECT_EQ(e.first_time, std::chrono::floor<seconds>(clock_->Now()));
    // A valid event, as the queue and the service will read it.
    auto parsed = formats::ParseFailureEvent(DumpJson(formats::ToJson(e)));
    ASSERT_TRUE(parsed) << parsed.error().message();
    EXPECT_EQ(*parsed, e);

    AppStatus s = StatusOf(kAppA);
    EXPECT_EQ(s.state, AppState::kWaiting);
    EXPECT_EQ(s.launches, k + 1);
    EXPECT_EQ(s.failures, k + 1);
    EXPECT_EQ(s.last_exit, ExitStatus::Killed(SIGSEGV));
    EXPECT_EQ(s.last_delay, expected[k]);
    ASSERT_TRUE(s.next_start);
    EXPECT_EQ(*s.next_start, clock_->Monotonic() + expected[k]);

    // Not a millisecond early...
    clock_->Advance(expected[k] - milliseconds(1));
    supervisor_->Wake();
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_EQ(StatusOf(kAppA).launches, k + 1) << "restarted before its delay";
    // ...and then at once.
    clock_->Advance(milliseconds(1));
    supervisor_->Wake();
  }
  ASSERT_TRUE(WaitForEvents(expected.size() + 1));
  std::set<std::string> ids;
  for (const auto& e : events_) ids.insert(e.event_id);
  EXPECT_EQ(ids.size(), events_.size()) << "event IDs are unique";
}

TEST_F(SupervisorTest, ASecondAppRunsUntouchedWhileTheFirstCrashLoops) {
  options_.restart.crash_loop_crashes = 3;
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppB, {"sleep"})));
  ASSERT_TRUE(WaitUntil([&] { return Running(kAppB); }));
  const pid_t b_pid = *StatusOf(kAppB).pid;
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"crash"})));
  for (size_t k = 1; k <= 3; ++k) {
    ASSERT_TRUE(WaitForEvents(k));
    if (k < 3) {
      std::lock_guard lock(mu_);
      EXPECT_TRUE(crash_loops_.empty()) << "crash loop reported after only " << k << " crashes";
    }
    if (k < 3) AdvanceToRestart(kAppA);
  }
  {
    std::unique_lock lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, seconds(10), [&] { return !crash_loops_.empty(); }));
    EXPECT_EQ(crash_loops_, std::vector<formats::Guid>{kAppA});
    for (const auto& e : events_) EXPECT_EQ(e.component_id, kAppA);
  }
  AppStatus b = StatusOf(kAppB);
  EXPECT_EQ(b.state, AppState::kRunning);
  EXPECT_EQ(b.pid, b_pid);
  EXPECT_EQ(b.launches, 1u);
  EXPECT_EQ(b.failures, 0u);
  EXPECT_TRUE(ProcessExists(b_pid));
  EXPECT_EQ(ReadFile(dir_->path() / (kAppB.ToString() + ".out"), 4096).value_or(""), "sleeping\n");
}

TEST_F(SupervisorTest, ACrashEventCarriesRegistersAndASymbolizableStackWithAStableSignature) {
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"crash"})));
  ASSERT_TRUE(WaitForEvents(1));
  AdvanceToRestart(kAppA);
  ASSERT_TRUE(WaitForEvents(2));
  auto elf = sandbox::testing::ElfFile::Load(MOAT_SANDBOX_TEST_APP);
  ASSERT_TRUE(elf);
  auto here = elf->Symbol("moat_test_crash_here");
  auto caller = elf->Symbol("moat_test_crash_caller");
  ASSERT_TRUE(here && caller);
  std::lock_guard lock(mu_);
  for (const formats::FailureEvent& e : events_) {
    EXPECT_EQ(e.kind, formats::FailureKind::kAppCrash);
    EXPECT_EQ(e.signal, SIGSEGV);
    EXPECT_EQ(e.component_id, kAppA);
    EXPECT_EQ(e.code, SEGV_MAPERR);
    EXPECT_EQ(e.fault_address, 0u);
    ASSERT_TRUE(e.pc && e.sp);
    ASSERT_GE(e.stack.size(), 2u);
    const formats::StackFrame& top = e.stack[0];
    EXPECT_EQ(top.module, "test_app");
    EXPECT_EQ(top.build_id, elf->BuildId());
    EXPECT_EQ(top.pc, *e.pc);
    EXPECT_GE(top.offset, here->address);
    EXPECT_LT(top.offset, here->address + here->size);
    EXPECT_EQ(e.stack[1].module, "test_app");
    EXPECT_GT(e.stack[1].offset, caller->address);
    EXPECT_LT(e.stack[1].offset, caller->address + caller->size);
    auto parsed = formats::ParseFailureEvent(DumpJson(formats::ToJson(e)));
    ASSERT_TRUE(parsed) << parsed.error().message();
    EXPECT_EQ(*parsed, e);
  }
  // Two crashes of one bug: one bucket.
  EXPECT_NE(events_[0].event_id, events_[1].event_id);
  EXPECT_EQ(formats::StackSignature(events_[0]), formats::StackSignature(events_[1]));
  EXPECT_THAT(formats::AzureSphereDescription(events_[0]), HasSubstr("signal_status=11"));
}

TEST_F(SupervisorTest, ExitsMemoryKillsAndLaunchFailuresEachHaveTheirKind) {
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"exit", "3"})));
  ASSERT_TRUE(WaitForEvents(1));
  SupervisedApp hog = App(kAppB, {"alloc", "128"});
  hog.spec.limits.memory_bytes = 16 << 20;
  ASSERT_TRUE(supervisor_->Add(hog));
  ASSERT_TRUE(WaitForEvents(2));
  SupervisedApp missing = App(kAppC, {});
  missing.spec.executable = "/bin/missing";
  ASSERT_TRUE(supervisor_->Add(missing));
  ASSERT_TRUE(WaitForEvents(3));

  std::lock_guard lock(mu_);
  EXPECT_EQ(events_[0].kind, formats::FailureKind::kAppExit);
  EXPECT_EQ(events_[0].exit_status, 3);
  EXPECT_EQ(events_[0].component_id, kAppA);
  EXPECT_EQ(events_[1].kind, formats::FailureKind::kAppMemoryLimit);
  EXPECT_EQ(events_[1].signal, SIGKILL);
  EXPECT_EQ(events_[1].component_id, kAppB);
  EXPECT_EQ(events_[2].kind, formats::FailureKind::kLaunchFailed);
  EXPECT_EQ(events_[2].component_id, kAppC);
  AppStatus c = *supervisor_->Status(kAppC);
  EXPECT_EQ(c.launches, 0u);
  EXPECT_THAT(c.last_error, HasSubstr("execve /bin/missing"));
  for (const auto& e : events_) {
    EXPECT_TRUE(formats::ParseFailureEvent(DumpJson(formats::ToJson(e))))
        << formats::FailureKindName(e.kind);
  }
}

TEST_F(SupervisorTest, ACleanExitIsRestartedWithoutAFailureAndItsOutputIsLoggedWithACap) {
  options_.log_max_bytes = 40;
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"hello"})));
  ASSERT_TRUE(WaitUntil([&] { return StatusOf(kAppA).last_exit.has_value(); }));
  AdvanceToRestart(kAppA);
  ASSERT_TRUE(WaitUntil([&] {
    AppStatus s = StatusOf(kAppA);
    return s.launches == 2 && s.state == AppState::kWaiting;
  }));
  EXPECT_EQ(EventCount(), 0u);
  EXPECT_EQ(StatusOf(kAppA).last_exit, ExitStatus::Exited(0));
  EXPECT_EQ(StatusOf(kAppA).last_delay, seconds(2));
  // Two runs of 23 bytes with a cap of 40: rotated at the cap, newest kept.
  auto out = dir_->path() / (kAppA.ToString() + ".out");
  EXPECT_EQ(ReadFile(out.string() + ".1", 4096).value_or(""),
            "hello from the sandbox\nhello from the sa");
  EXPECT_EQ(ReadFile(out, 4096).value_or(""), "ndbox\n");
  EXPECT_EQ(ReadFile(dir_->path() / (kAppA.ToString() + ".err"), 4096).value_or(""),
            "this is stderr\nthis is stderr\n");
}

TEST_F(SupervisorTest, RemoveStopsWithSigtermThenSigkillAndTheAppCanBeAddedAgain) {
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"sleep"})));
  ASSERT_TRUE(supervisor_->Add(App(kAppB, {"ignore_term"})));
  ASSERT_TRUE(WaitUntil([&] { return Running(kAppA) && Running(kAppB); }));
  // Wait for the apps to be past startup (their output says so), so SIGTERM meets the app.
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(dir_->path() / (kAppB.ToString() + ".out"), 4096).value_or("") ==
           "ignoring SIGTERM\n";
  }));
  pid_t a_pid = *StatusOf(kAppA).pid;
  auto a = supervisor_->Remove(kAppA);
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(*a, ExitStatus::Killed(SIGTERM));
  EXPECT_FALSE(ProcessExists(a_pid));
  EXPECT_FALSE(supervisor_->Status(kAppA));
  auto b = supervisor_->Remove(kAppB);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(*b, ExitStatus::Killed(SIGKILL)) << "SIGTERM ignored: killed after the grace";
  EXPECT_EQ(EventCount(), 0u) << "a requested stop is not a failure";
  EXPECT_EQ(supervisor_->Remove(kAppA).error().code(), ErrorCode::kNotFound);

  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"sleep"})));
  ASSERT_TRUE(WaitUntil([&] { return Running(kAppA); }));
}

TEST_F(SupervisorTest, StopAppKeepsTheAppListedUntilStartAppRunsItAgain) {
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"sleep"})));
  ASSERT_TRUE(supervisor_->Add(App(kAppB, {"crash"})));
  ASSERT_TRUE(WaitUntil([&] { return Running(kAppA); }));
  ASSERT_TRUE(WaitForEvents(1));  // B waits for its restart
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(dir_->path() / (kAppA.ToString() + ".out"), 4096).value_or("") == "sleeping\n";
  }));
  const pid_t a_pid = *StatusOf(kAppA).pid;

  auto list = supervisor_->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].component_id, kAppA);
  EXPECT_EQ(list[0].image_id, kImage);
  EXPECT_EQ(list[0].app_name, kAppA.ToString());
  EXPECT_EQ(list[0].status.state, AppState::kRunning);
  EXPECT_EQ(list[1].component_id, kAppB);
  EXPECT_EQ(list[1].status.state, AppState::kWaiting);

  auto stopped = supervisor_->StopApp(kAppA);
  ASSERT_TRUE(stopped) << stopped.error().message();
  EXPECT_EQ(*stopped, ExitStatus::Killed(SIGTERM));
  EXPECT_FALSE(ProcessExists(a_pid));
  EXPECT_EQ(StatusOf(kAppA).state, AppState::kStopped);
  EXPECT_FALSE(StatusOf(kAppA).next_start);
  // A waiting app is stopped too: its restart is cancelled.
  auto b = supervisor_->StopApp(kAppB);
  ASSERT_TRUE(b);
  EXPECT_FALSE(*b);
  EXPECT_EQ(StatusOf(kAppB).state, AppState::kStopped);
  // Stopped apps stay stopped whatever the clock does, and are still listed.
  clock_->Advance(seconds(3600));
  supervisor_->Wake();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(StatusOf(kAppA).launches, 1u);
  EXPECT_EQ(StatusOf(kAppB).launches, 1u);
  EXPECT_EQ(supervisor_->List().size(), 2u);
  EXPECT_EQ(EventCount(), 1u) << "a requested stop is not a failure";
  EXPECT_TRUE(supervisor_->StopApp(kAppA)) << "stopping a stopped app is not an error";

  ASSERT_TRUE(supervisor_->StartApp(kAppA));
  ASSERT_TRUE(WaitUntil([&] { return Running(kAppA); }));
  EXPECT_EQ(StatusOf(kAppA).launches, 2u);
  EXPECT_NE(*StatusOf(kAppA).pid, a_pid);
  EXPECT_EQ(supervisor_->StartApp(kAppA).error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(supervisor_->StartApp(kAppC).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(supervisor_->StopApp(kAppC).error().code(), ErrorCode::kNotFound);
  // Remove works on a stopped app.
  auto removed = supervisor_->Remove(kAppB);
  ASSERT_TRUE(removed);
  EXPECT_FALSE(*removed);
  EXPECT_EQ(supervisor_->List().size(), 1u);
}

TEST_F(SupervisorTest, TheSpecAndTheLogTailAreAvailableForMoatctl) {
  options_.log_max_bytes = 40;
  Start();
  SupervisedApp app = App(kAppA, {"hello"});
  ASSERT_TRUE(supervisor_->Add(app));
  ASSERT_TRUE(WaitUntil([&] { return StatusOf(kAppA).last_exit.has_value(); }));
  AdvanceToRestart(kAppA);
  ASSERT_TRUE(WaitUntil([&] {
    AppStatus s = StatusOf(kAppA);
    return s.launches == 2 && s.state == AppState::kWaiting;
  }));
  auto spec = supervisor_->Spec(kAppA);
  ASSERT_TRUE(spec);
  EXPECT_EQ(*spec, app.spec);
  EXPECT_EQ(sandbox::SpecToJson(*spec)["executable"], "/bin/test_app");
  EXPECT_FALSE(supervisor_->Spec(kAppC));
  // Two runs of 23 bytes, a cap of 40: the tail crosses the rotation.
  EXPECT_EQ(supervisor_->LogTail(kAppA, LogStream::kStdout, 12).value_or(""), "the sandbox\n");
  EXPECT_EQ(supervisor_->LogTail(kAppA, LogStream::kStdout, 1000).value_or(""),
            "hello from the sandbox\nhello from the sandbox\n");
  EXPECT_EQ(supervisor_->LogTail(kAppA, LogStream::kStderr, 15).value_or(""), "this is stderr\n");
  EXPECT_EQ(supervisor_->LogTail(kAppC, LogStream::kStdout, 10).error().code(),
            ErrorCode::kNotFound);
}

TEST_F(SupervisorTest, AppsWithSystemEventNotificationsAnswerUpdatePendingEvents) {
  Start();
  const formats::Guid kAppD = G("dddddddd-0000-4000-8000-000000000004");
  SupervisedApp deferring = App(kAppA, {"events", "defer"});
  deferring.services.system_events = true;
  deferring.services.update_deferral = true;
  SupervisedApp not_allowed_to_defer = App(kAppB, {"events", "defer"});
  not_allowed_to_defer.services.system_events = true;
  SupervisedApp silent = App(kAppC, {"events", "none"});
  silent.services.system_events = true;
  SupervisedApp without = App(kAppD, {"events", "ok"});
  for (const SupervisedApp* app : {&deferring, &not_allowed_to_defer, &silent, &without}) {
    ASSERT_TRUE(supervisor_->Add(*app));
  }
  auto out = [&](const formats::Guid& id) {
    return ReadFile(dir_->path() / (id.ToString() + ".out"), 4096).value_or("");
  };
  ASSERT_TRUE(WaitUntil([&] {
    return out(kAppA).starts_with("events fd=3\n") && out(kAppB).starts_with("events fd=3\n") &&
           out(kAppC).starts_with("events fd=3\n");
  }));
  const SystemTime deadline = *ParseRfc3339("2026-11-28T03:00:00Z");
  const int64_t deadline_s =
      std::chrono::duration_cast<seconds>(deadline.time_since_epoch()).count();

  auto a = supervisor_->NotifyUpdatePending(kAppA, deadline, seconds(10));
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(*a, (UpdateAnswer{UpdateAnswer::Kind::kDeferred, seconds(600)}));
  // The app's output reaches its log through the supervisor's loop, after the answer perhaps.
  const std::string first = fmt::format("got update-pending 1 {}\n", deadline_s);
  EXPECT_TRUE(WaitUntil([&] { return out(kAppA).find(first) != std::string::npos; })) << out(kAppA);
  auto again = supervisor_->NotifyUpdatePending(kAppA, deadline, seconds(10));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->kind, UpdateAnswer::Kind::kDeferred);
  EXPECT_TRUE(WaitUntil([&] {
    return out(kAppA).find("got update-pending 2 ") != std::string::npos;
  })) << out(kAppA);

  auto b = supervisor_->NotifyUpdatePending(kAppB, deadline, seconds(10));
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->kind, UpdateAnswer::Kind::kAcknowledged) << "no SoftwareUpdateDeferral";

  auto c = supervisor_->NotifyUpdatePending(kAppC, deadline, milliseconds(200));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->kind, UpdateAnswer::Kind::kNoAnswer);
  EXPECT_TRUE(WaitUntil([&] {
    return out(kAppC).find("got update-pending 1 ") != std::string::npos;
  })) << out(kAppC);

  // Without the capability: no socket in the app, and no notification.
  ASSERT_TRUE(WaitUntil([&] { return out(kAppD).starts_with("events=none\n"); }));
  EXPECT_EQ(supervisor_->NotifyUpdatePending(kAppD, deadline, seconds(1)).error().code(),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(
      supervisor_
          ->NotifyUpdatePending(G("eeeeeeee-0000-4000-8000-000000000005"), deadline, seconds(1))
          .error()
          .code(),
      ErrorCode::kNotFound);
  // A stopped app cannot answer.
  ASSERT_TRUE(supervisor_->StopApp(kAppA));
  EXPECT_EQ(supervisor_->NotifyUpdatePending(kAppA, deadline, seconds(1)).error().code(),
            ErrorCode::kUnavailable);
}

TEST_F(SupervisorTest, OnlyAppsThatListEachOtherGetAChannel) {
  Start();
  SupervisedApp a = App(kAppA, {"peer", "a"});
  a.services.connections = {kAppB};
  SupervisedApp b = App(kAppB, {"peer", "b"});
  b.services.connections = {kAppA};
  SupervisedApp c = App(kAppC, {"peer", "c"});
  c.services.connections = {kAppA};  // A does not list C
  auto out = [&](const formats::Guid& id) {
    return ReadFile(dir_->path() / (id.ToString() + ".out"), 4096).value_or("");
  };
  ASSERT_TRUE(supervisor_->Add(a));
  ASSERT_TRUE(WaitUntil([&] { return out(kAppA) == "connections=none\n"; }));
  ASSERT_TRUE(supervisor_->Add(b));
  ASSERT_TRUE(supervisor_->Add(c));
  // B, added after A, has its channel at once; A gets its end at its next start, and B's hello
  // waits for it in the channel.
  ASSERT_TRUE(WaitUntil([&] { return out(kAppB).starts_with("connections="); }));
  EXPECT_EQ(out(kAppB).substr(0, out(kAppB).find('\n')),
            fmt::format("connections={}=4", kAppA.ToString()));
  ASSERT_TRUE(supervisor_->StopApp(kAppA));
  ASSERT_TRUE(supervisor_->StartApp(kAppA));
  ASSERT_TRUE(WaitUntil([&] {
    return out(kAppA).find("from ") != std::string::npos &&
           out(kAppB).find("from ") != std::string::npos;
  }));
  EXPECT_EQ(out(kAppA), fmt::format("connections=none\nconnections={0}=4\nfrom {0}: hello from b\n",
                                    kAppB.ToString()));
  EXPECT_EQ(out(kAppB),
            fmt::format("connections={0}=4\nfrom {0}: hello from a\n", kAppA.ToString()));
  ASSERT_TRUE(WaitUntil([&] { return !out(kAppC).empty(); }));
  EXPECT_EQ(out(kAppC), "connections=none\n") << "C lists A, but A does not list C";
  // Removing B closes the channel; A's next run has none.
  ASSERT_TRUE(supervisor_->Remove(kAppB));
  ASSERT_TRUE(supervisor_->StopApp(kAppA));
  ASSERT_TRUE(supervisor_->StartApp(kAppA));
  ASSERT_TRUE(WaitUntil([&] {
    std::string log = out(kAppA);
    return log.ends_with("connections=none\n") &&
           log.find("connections=none") != log.rfind("connections=none");
  }));
}

// moatd's side of device authentication for these tests: a real P-256 key, one tenant, and a
// switch for "the device has no valid client certificate".
class TestAuthority : public DeviceAuthority {
 public:
  explicit TestAuthority(formats::Guid tenant)
      : tenant_(tenant), key_(*crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256)) {}
  Result<std::string> CertificateChainPem(const formats::Guid& tenant) override {
    MOAT_TRY(Check(tenant));
    return std::string("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
  }
  Result<std::vector<uint8_t>> SignDigest(const formats::Guid& tenant,
                                          const std::array<uint8_t, 32>& digest) override {
    MOAT_TRY(Check(tenant));
    return key_.SignDigest(digest);
  }
  crypto::PublicKey public_key() const { return key_.public_key(); }
  std::atomic<bool> has_certificate = true;

 private:
  Result<void> Check(const formats::Guid& tenant) const {
    if (!has_certificate) {
      return Fail(ErrorCode::kFailedPrecondition, "this device has no valid client certificate");
    }
    if (tenant != tenant_) {
      return Fail(ErrorCode::kPermissionDenied, "this device does not belong to tenant {}",
                  tenant.ToString());
    }
    return Ok();
  }
  formats::Guid tenant_;
  crypto::PrivateKey key_;
};

TEST_F(SupervisorTest, ASandboxedAppGetsTheChainAndSignaturesButNeverTheKey) {
  const formats::Guid tenant = G("7d3a1c2e-1111-4222-8333-444455556666");
  auto authority = std::make_shared<TestAuthority>(tenant);
  options_.device_authority = authority;
  Start();
  auto out = [&](const formats::Guid& id) {
    return ReadFile(dir_->path() / (id.ToString() + ".out"), 1 << 16).value_or("");
  };
  const crypto::Sha256Digest digest = crypto::Sha256(std::string_view("CertificateVerify"));
  const std::string sign = "sign " + HexEncode(digest);
  SupervisedApp a = App(kAppA, {"device_auth", "chain", sign, "sign XYZ", "bogus", "LONG"});
  a.services.device_authentication = tenant;
  ASSERT_TRUE(supervisor_->Add(a));
  ASSERT_TRUE(WaitUntil([&] { return out(kAppA).ends_with("done\n"); })) << out(kAppA);
  const std::string log = out(kAppA);
  EXPECT_THAT(log, HasSubstr("auth fd=11\nchain -> ok\npem-lines=3\n"));
  const size_t at = log.find(fmt::format("{} -> ok ", sign.substr(0, 8)));
  ASSERT_NE(at, std::string::npos) << log;
  const size_t hex_start = at + sign.substr(0, 8).size() + 7;
  auto signature = HexDecode(log.substr(hex_start, log.find('\n', hex_start) - hex_start));
  ASSERT_TRUE(signature) << log;
  EXPECT_TRUE(authority->public_key().VerifyDigest(digest, *signature))
      << "the app's signature verifies with the device key";
  EXPECT_THAT(log, HasSubstr("sign XYZ -> error malformed request: 'sign' needs a SHA-256 digest"));
  EXPECT_THAT(log, HasSubstr("bogus -> error malformed request: unknown request 'bogus'"));
  EXPECT_THAT(log,
              HasSubstr("LONG -> error malformed request: request of 200 bytes (at most 128)"));
  // Not the process's environment alone: the descriptor is the app's, moatd's end is served.
  EXPECT_THAT(log, Not(HasSubstr("closed")));

  // An app naming another tenant is refused, and so is any app once the device has no valid
  // client certificate.
  SupervisedApp b = App(kAppB, {"device_auth", "chain", sign});
  b.services.device_authentication = G("00000000-aaaa-4bbb-8ccc-dddddddddddd");
  ASSERT_TRUE(supervisor_->Add(b));
  ASSERT_TRUE(WaitUntil([&] { return out(kAppB).ends_with("done\n"); })) << out(kAppB);
  EXPECT_THAT(out(kAppB), HasSubstr("chain -> error this device does not belong to tenant "
                                    "00000000-aaaa-4bbb-8ccc-dddddddddddd\n"));
  EXPECT_THAT(out(kAppB), HasSubstr(" -> error this device does not belong to tenant"));
  authority->has_certificate = false;
  ASSERT_TRUE(supervisor_->StopApp(kAppA));
  ASSERT_TRUE(supervisor_->StartApp(kAppA));
  ASSERT_TRUE(WaitUntil([&] {
    std::string l = out(kAppA);
    return l.find("done\n") != l.rfind("done\n");
  })) << out(kAppA);
  EXPECT_THAT(out(kAppA).substr(log.size()),
              HasSubstr("chain -> error this device has no valid client certificate\n"));

  // An app without the capability has no channel.
  SupervisedApp c = App(kAppC, {"device_auth", "chain"});
  ASSERT_TRUE(supervisor_->Add(c));
  ASSERT_TRUE(WaitUntil([&] { return !out(kAppC).empty(); }));
  EXPECT_EQ(out(kAppC), "auth fd=none\n");
}

TEST_F(SupervisorTest, DeviceAuthenticationNeedsAnAuthority) {
  Start();
  SupervisedApp a = App(kAppA, {"device_auth", "chain"});
  a.services.device_authentication = G("7d3a1c2e-1111-4222-8333-444455556666");
  auto added = supervisor_->Add(a);
  ASSERT_FALSE(added);
  EXPECT_EQ(added.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(added.error().message(), HasSubstr("has no device authority"));
}

TEST_F(SupervisorTest, ShutdownLeavesNoProcessAndNoCgroup) {
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"sleep"})));
  ASSERT_TRUE(supervisor_->Add(App(kAppB, {"ignore_term"})));
  ASSERT_TRUE(supervisor_->Add(App(kAppC, {"crash"})));  // waiting for its restart
  ASSERT_TRUE(WaitUntil([&] { return Running(kAppA) && Running(kAppB); }));
  ASSERT_TRUE(WaitForEvents(1));
  std::vector<pid_t> pids = {*StatusOf(kAppA).pid, *StatusOf(kAppB).pid};
  for (pid_t pid : pids) EXPECT_TRUE(ProcessExists(pid));
  supervisor_->Shutdown();
  for (pid_t pid : pids) EXPECT_FALSE(ProcessExists(pid)) << pid;
  for (const auto* c : {&layout_->memory, &layout_->pids}) {
    EXPECT_FALSE(std::filesystem::exists(c->Base() / ("moat-" + instance_)));
  }
  EXPECT_FALSE(supervisor_->Status(kAppA));
  EXPECT_EQ(supervisor_->Add(App(kAppA, {"sleep"})).error().code(), ErrorCode::kFailedPrecondition);
  supervisor_->Shutdown();  // idempotent
}

TEST_F(SupervisorTest, AddRefusesDuplicatesAndInvalidApps) {
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"sleep"})));
  EXPECT_EQ(supervisor_->Add(App(kAppA, {"sleep"})).error().code(), ErrorCode::kAlreadyExists);
  SupervisedApp same_name = App(kAppB, {"sleep"});
  same_name.spec.app_name = kAppA.ToString();
  auto r = supervisor_->Add(same_name);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(r.error().message(), HasSubstr("sandbox name"));
  SupervisedApp nil = App(kAppC, {"sleep"});
  nil.component_id = formats::Guid{};
  EXPECT_EQ(supervisor_->Add(nil).error().code(), ErrorCode::kInvalidArgument);
  SupervisedApp root = App(kAppC, {"sleep"});
  root.spec.uid = 0;
  EXPECT_EQ(supervisor_->Add(root).error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(SupervisorTest, ACallbackMayRemoveTheCrashLoopingApp) {
  options_.restart.crash_loop_crashes = 1;
  options_.on_crash_loop = [this](const formats::Guid& id) {
    auto r = supervisor_->Remove(id);  // from the supervisor thread: requests, does not wait
    std::lock_guard lock(mu_);
    EXPECT_TRUE(r) << r.error().message();
    crash_loops_.push_back(id);
    cv_.notify_all();
  };
  Start();
  ASSERT_TRUE(supervisor_->Add(App(kAppA, {"crash"})));
  ASSERT_TRUE(WaitUntil([&] { return !supervisor_->Status(kAppA).has_value(); }));
  std::lock_guard lock(mu_);
  EXPECT_EQ(crash_loops_, std::vector<formats::Guid>{kAppA});
}

}  // namespace
}  // namespace moat::device::supervisor

namespace moat::device::supervisor {
namespace {

// Connects from the host to ip:port (real time, bounded): "ok <line>" or the errno name.
std::string ConnectFromHost(const std::string& ip, uint16_t port, int timeout_ms) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(sandbox::Ipv4Address::Parse(ip)->value);
  int err = ::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
  if (err == EINPROGRESS) {
    pollfd p{s.get(), POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return "ETIMEDOUT";
    socklen_t len = sizeof err;
    ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  }
  if (err != 0) return strerrorname_np(err);
  pollfd p{s.get(), POLLIN, 0};
  char buf[64] = {0};
  ssize_t n = ::poll(&p, 1, timeout_ms) == 1 ? ::read(s.get(), buf, sizeof buf - 1) : -1;
  std::string line = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "none";
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return "ok " + line;
}

class SupervisorNetworkTest : public SupervisorTest {
 protected:
  void SetUp() override {
    SupervisorTest::SetUp();
    if (IsSkipped()) return;
    if (!sandbox::FindHostTool("ip") || !sandbox::FindHostTool("nft")) {
      GTEST_SKIP() << "network tests need `ip` and `nft`";
    }
    // A one-link pool of this run's own: the app's addresses are known, a second app gets none.
    pool_ = *sandbox::Ipv4Subnet::Parse(fmt::format("10.213.{}.8/30", getpid() % 250 + 1));
    options_.network_pool = pool_;
  }
  std::string AppAddress() const { return sandbox::LinkAppAddress(pool_).ToString(); }
  sandbox::Ipv4Subnet pool_;
};

TEST_F(SupervisorNetworkTest, AnAppGetsItsPolicyOnEveryRunAndNothingIsLeftAfterRemove) {
  Start();
  SupervisedApp app = App(kAppA, {"serve_tcp", "8080,8081"});
  app.spec.network = sandbox::NetworkMode::kConfigured;
  app.network_policy.emplace();
  app.network_policy->tcp_server_ports = {8080};
  ASSERT_TRUE(supervisor_->Add(app));
  const std::string dev = sandbox::HostInterfaceName(instance_, kAppA.ToString());
  const std::string table = sandbox::NftTableName(instance_, kAppA.ToString());
  // How many runs have started listening (the log is appended to across runs).
  auto listening = [&](size_t runs) {
    std::string log = ReadFile(app.spec.stdout_path, 1 << 16).value_or("");
    size_t n = 0;
    for (size_t at = log.find("listening"); at != std::string::npos;
         at = log.find("listening", at + 1)) {
      ++n;
    }
    return n >= runs;
  };
  ASSERT_TRUE(WaitUntil([&] { return listening(1); }));
  EXPECT_EQ(ConnectFromHost(AppAddress(), 8080, 2000), "ok hello from 8080");
  EXPECT_EQ(ConnectFromHost(AppAddress(), 8081, 300), "ETIMEDOUT");

  // A second networked app finds the (one-link) pool used up; nothing of it starts.
  SupervisedApp second = App(kAppB, {"serve_tcp", "8080"});
  second.spec.network = sandbox::NetworkMode::kConfigured;
  second.network_policy.emplace();
  auto refused = supervisor_->Add(second);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kLimitExceeded);

  // Killed: the run's network goes with it, and the restart gets a fresh one.
  pid_t first_pid = *StatusOf(kAppA).pid;
  ASSERT_EQ(::kill(first_pid, SIGKILL), 0);
  ASSERT_TRUE(WaitForEvents(1));
  ASSERT_TRUE(WaitUntil([&] { return !Running(kAppA); }));
  EXPECT_FALSE(sandbox::NetworkInterfaceExists(dev));
  AdvanceToRestart(kAppA);
  ASSERT_TRUE(WaitUntil([&] { return Running(kAppA) && listening(2); }));
  EXPECT_EQ(ConnectFromHost(AppAddress(), 8080, 2000), "ok hello from 8080");

  ASSERT_TRUE(supervisor_->Remove(kAppA));
  EXPECT_FALSE(sandbox::NetworkInterfaceExists(dev));
  auto nft = sandbox::FindHostTool("nft");
  EXPECT_FALSE(sandbox::RunHostTool({nft->string(), "list", "table", "inet", table}));
  // The link went back to the pool.
  ASSERT_TRUE(supervisor_->Add(second));
  ASSERT_TRUE(supervisor_->Remove(kAppB));
}

TEST_F(SupervisorNetworkTest, TheNetworkModeAndItsSourceMustAgree) {
  Start();
  SupervisedApp none = App(kAppA, {"hello"});
  none.network_policy.emplace();  // kNone with a policy
  EXPECT_EQ(supervisor_->Add(none).error().code(), ErrorCode::kInvalidArgument);
  SupervisedApp bare = App(kAppA, {"hello"});
  bare.spec.network = sandbox::NetworkMode::kConfigured;  // neither
  EXPECT_EQ(supervisor_->Add(bare).error().message(),
            fmt::format("supervisor: app {}: network configured needs exactly one of "
                        "network_policy and network_hook",
                        kAppA.ToString()));
  SupervisedApp both = bare;
  both.network_policy.emplace();
  both.network_hook = [](pid_t) { return Ok(); };
  EXPECT_EQ(supervisor_->Add(both).error().code(), ErrorCode::kInvalidArgument);
  SupervisedApp bad = bare;
  bad.network_policy.emplace();
  bad.network_policy->udp_server_ports = {0};
  EXPECT_EQ(supervisor_->Add(bad).error().message(), "network policy: udp_server_ports: port 0");
}

}  // namespace
}  // namespace moat::device::supervisor
