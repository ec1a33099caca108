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

#include <condition_variable>
#include <mutex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file.h"
#include "core/json.h"
#include "device/sandbox/app_network.h"
#include "device/sandbox/host_tool.h"

namespace moat::device::supervisor {
namespace {

using sandbox::ExitStatus;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

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
