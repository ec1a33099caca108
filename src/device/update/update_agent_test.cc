// UpdateAgent: the whole check (bootstrap, TUF refresh, image keys, install, report) against
// repositories published the way the service publishes them, the update window, deferral,
// crash-loop rollback, group changes, offline bundles, and kill -9 during a whole check.
#include "device/update/update_agent.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>

#include "core/file.h"
#include "device/update/crash_point.h"
#include "device/update/test_repo.h"

namespace moat::device::update {
namespace {

namespace fs = std::filesystem;
namespace tuf = formats::tuf;
using namespace testing;
using namespace std::chrono_literals;

class UpdateAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("updagent");
    ASSERT_TRUE(d);
    dir_.emplace(std::move(*d));
    transport_.group = "g1";
    transport_.repos["g1"] = &repo_;
    v1_ = Package(signer_, "1.0");
    v2_ = Package(signer_, "2.0");
    Reopen();
  }
  void Reopen(UpdateAgentOptions options = {}) {
    agent_.reset();
    store_.reset();
    auto s = AppStore::Open(dir_->path() / "apps", clock_);
    ASSERT_TRUE(s) << s.error().message();
    store_.emplace(std::move(*s));
    UpdateHooks hooks;
    hooks.on_app_changed = [this](const InstalledApp& app) -> Result<void> {
      started_.push_back(app.current.version);
      return Ok();
    };
    hooks.running = [] { return std::vector<formats::Guid>{kComponent}; };
    auto a = UpdateAgent::Open(dir_->path(), *store_, &transport_, hooks, clock_, options);
    ASSERT_TRUE(a) << a.error().message();
    agent_ = std::move(*a);
  }
  // Time passes; the repository keeps its timestamp fresh, as the service does.
  void Tick(std::chrono::seconds d) {
    clock_.Advance(d);
    ASSERT_TRUE(repo_.writer->RefreshTimestamp(clock_.Now()));
    repo_.Serve();
  }
  std::optional<std::string> Installed() {
    auto app = store_->Get(kComponent);
    if (!app || !*app) return std::nullopt;
    return (*app)->current.version;
  }
  static void ExpectResult(const UpdateOutcome& o, std::string_view result,
                           std::string_view detail = "") {
    EXPECT_EQ(o.result, result) << o.detail;
    if (o.result != result) ADD_FAILURE() << "detail: " << o.detail;
    EXPECT_NE(o.detail.find(detail), std::string::npos) << o.detail;
  }

  FakeClock clock_{*ParseRfc3339("2026-12-06T12:00:00Z")};
  crypto::PrivateKey signer_ = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  TestRepo repo_{clock_};
  FakeTransport transport_;
  std::string v1_, v2_;
  std::optional<TempDir> dir_;
  std::optional<AppStore> store_;
  std::unique_ptr<UpdateAgent> agent_;
  std::vector<std::string> started_;
};

TEST_F(UpdateAgentTest, BootstrapsInstallsReportsThenDownloadsOnlyTheTimestamp) {
  repo_.Publish({v1_}, {signer_.public_key()});
  UpdateOutcome o = agent_->Check(false);
  ExpectResult(o, "ok", "installed blink 1.0");
  EXPECT_EQ(o.targets_version, 2);
  EXPECT_TRUE(o.reported);
  EXPECT_EQ(Installed(), "1.0");
  EXPECT_EQ(started_, std::vector<std::string>{"1.0"});
  EXPECT_EQ(transport_.fetched.front(), "g1/1.root.json");
  ASSERT_EQ(transport_.statuses.size(), 1u);
  const Json& s = transport_.statuses[0];
  EXPECT_EQ(s["installed"][0]["component_id"], kComponent.ToString());
  EXPECT_EQ(s["installed"][0]["image_id"], ImageIdOf(v1_));
  EXPECT_EQ(s["installed"][0]["version"], "1.0");
  EXPECT_EQ(s["running"][0], kComponent.ToString());
  EXPECT_EQ(s["last_update"]["result"], "ok");
  EXPECT_EQ(s["last_update"]["targets_version"], 2);
  EXPECT_TRUE(s["os"].contains("name"));

  transport_.fetched.clear();
  o = agent_->Check(false);
  ExpectResult(o, "none", "up to date");
  EXPECT_EQ(transport_.fetched, (std::vector<std::string>{"g1/2.root.json", "g1/timestamp.json"}));

  // State survives a restart: still up to date, nothing downloaded again.
  Reopen();
  transport_.fetched.clear();
  ExpectResult(agent_->Check(false), "none");
  EXPECT_EQ(transport_.fetched.size(), 2u);
}

TEST_F(UpdateAgentTest, InstallsANewVersionKeepingThePrevious) {
  repo_.Publish({v1_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok");
  repo_.Publish({v2_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok", "blink 2.0");
  EXPECT_EQ(Installed(), "2.0");
  EXPECT_EQ((*store_->Get(kComponent))->previous->version, "1.0");
}

TEST_F(UpdateAgentTest, RefusesAPackageNotSignedByTheTenantsImageKeys) {
  auto other = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  repo_.Publish({Package(other, "1.0")}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "failed", "signed by unknown key");
  EXPECT_FALSE(Installed());
  EXPECT_EQ(transport_.statuses.back()["last_update"]["result"], "failed");
}

TEST_F(UpdateAgentTest, RefusesAnArbitraryPackageServedInPlaceOfTheTarget) {
  repo_.Publish({v1_}, {signer_.public_key()});
  const std::string path =
      tuf::TargetPath(ImageIdOf(v1_) + ".imagepackage", crypto::Sha256(v1_), true);
  std::string evil = Package(signer_, "1.0", kComponent, false, 10);  // validly signed, but other
  evil.resize(std::min(evil.size(), v1_.size()));
  evil.resize(v1_.size(), 'x');
  repo_.files[path] = evil;
  ExpectResult(agent_->Check(false), "failed", "sha256 does not match");
  EXPECT_FALSE(Installed());
  repo_.files[path] = v1_ + "endless data";
  ExpectResult(agent_->Check(false), "failed", "more than");
  EXPECT_FALSE(Installed());
}

TEST_F(UpdateAgentTest, HonoursTheUpdateWindow) {
  UpdateAgentOptions options;
  options.window = *ParseUpdateWindow("02:00-04:00");
  Reopen(options);
  repo_.Publish({v1_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "deferred", "outside the update window");
  EXPECT_FALSE(Installed());
  clock_.Set(*ParseRfc3339("2026-12-07T02:30:00Z"));
  ExpectResult(agent_->Check(false), "ok");
  repo_.Publish({v2_}, {signer_.public_key()});
  clock_.Set(*ParseRfc3339("2026-12-07T04:00:00Z"));
  ExpectResult(agent_->Check(false), "deferred");
  ExpectResult(agent_->Check(/*ignore_window=*/true), "ok");  // moatctl update now --ignore-window
  EXPECT_EQ(Installed(), "2.0");

  auto wrap = *ParseUpdateWindow("23:00-01:00");
  EXPECT_TRUE(wrap.Contains(*ParseRfc3339("2026-12-07T00:30:00Z")));
  EXPECT_FALSE(wrap.Contains(*ParseRfc3339("2026-12-07T01:00:00Z")));
  EXPECT_FALSE(ParseUpdateWindow("2:00-04:00"));
  EXPECT_FALSE(ParseUpdateWindow("02:00-02:00"));
  EXPECT_FALSE(ParseUpdateWindow("24:00-02:00"));
}

TEST_F(UpdateAgentTest, AppWithSoftwareUpdateDeferralDefersForABoundedTime) {
  UpdateAgentOptions options;
  options.max_deferral = 24h;
  Reopen(options);
  repo_.Publish({Package(signer_, "1.0", kComponent, /*deferral=*/true)}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok");
  auto until = agent_->RequestDeferral(kComponent, 100h);
  ASSERT_TRUE(until) << until.error().message();
  EXPECT_EQ(*until, clock_.Now() + 24h) << "bounded by max_deferral";
  repo_.Publish({v2_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "deferred", "deferred by the app");
  Tick(23h);
  ASSERT_TRUE(agent_->RequestDeferral(kComponent, 10h));  // asking again does not extend it
  ExpectResult(agent_->Check(false), "deferred");
  Tick(1h + 1s);
  ExpectResult(agent_->Check(false), "ok", "blink 2.0");

  // v2's manifest has no SoftwareUpdateDeferral.
  auto refused = agent_->RequestDeferral(kComponent, 1h);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
}

TEST_F(UpdateAgentTest, CrashLoopAfterAnUpdateRollsBackAndMarksTheImageBad) {
  repo_.Publish({v1_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok");
  repo_.Publish({v2_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok");
  clock_.Advance(5min);
  UpdateOutcome o = agent_->HandleCrashLoop(kComponent);
  ExpectResult(o, "rolled-back", "'blink' 2.0 crash-looped after its update; rolled back to 1.0");
  EXPECT_EQ(Installed(), "1.0");
  EXPECT_EQ(started_.back(), "1.0");
  EXPECT_EQ(transport_.statuses.back()["last_update"]["result"], "rolled-back");
  EXPECT_EQ(transport_.statuses.back()["installed"][0]["version"], "1.0");

  // Not reinstalled while the same targets are in force, even after a restart.
  Reopen();
  ExpectResult(agent_->Check(false), "none", "not reinstalled");
  EXPECT_EQ(Installed(), "1.0");
  EXPECT_EQ(agent_->Status()["bad_images"][0]["image_id"], ImageIdOf(v2_));
  // A newer targets version may offer it again.
  repo_.Publish({v2_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok", "blink 2.0");
}

TEST_F(UpdateAgentTest, CrashLoopLongAfterAnUpdateIsNotRolledBack) {
  repo_.Publish({v1_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok");
  ExpectResult(agent_->HandleCrashLoop(kComponent), "none", "no previous version");
  repo_.Publish({v2_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok");
  clock_.Advance(2h);
  ExpectResult(agent_->HandleCrashLoop(kComponent), "none", "installed too long ago");
  EXPECT_EQ(Installed(), "2.0");
}

TEST_F(UpdateAgentTest, StartsTrustOverWhenTheDeviceMovesToAnotherGroup) {
  repo_.Publish({v1_}, {signer_.public_key()});
  ExpectResult(agent_->Check(false), "ok");
  TestRepo other(clock_);  // other keys entirely
  other.Publish({v2_}, {signer_.public_key()});
  transport_.repos["g2"] = &other;
  transport_.group = "g2";
  transport_.fetched.clear();
  ExpectResult(agent_->Check(false), "ok", "blink 2.0");
  EXPECT_EQ(transport_.fetched.front(), "g2/1.root.json");
  EXPECT_FALSE(fs::exists(dir_->path() / "update" / "tuf" / "g1"));
  EXPECT_EQ(agent_->Status()["group"], "g2");

  transport_.group = std::nullopt;
  ExpectResult(agent_->Check(false), "none", "in no device group");
  transport_.offline = true;
  ExpectResult(agent_->Check(false), "failed", "service unreachable");
  EXPECT_EQ(Installed(), "2.0");
}

TEST_F(UpdateAgentTest, OfflineBundleInstallsWithTheSameChecks) {
  std::vector<uint8_t> bundle;
  auto bytes = [](const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); };
  repo_.Publish({v1_}, {signer_.public_key()});
  // Never online: no trusted root to chain from.
  ExpectResult(agent_->ApplyBundle(bytes(repo_.Bundle("g1")), false), "failed",
               "must complete one online update check first");
  ExpectResult(agent_->Check(false), "ok");

  transport_.offline = true;
  repo_.Publish({v2_}, {signer_.public_key()});
  ExpectResult(agent_->ApplyBundle(bytes(repo_.Bundle("g2")), false), "failed",
               "the bundle is for device group 'g2'");

  // Tampered metadata: the container parses, TUF refuses (before the good metadata is trusted).
  std::string good = repo_.Bundle("g1");
  std::string meta_tampered = good;
  size_t at = meta_tampered.rfind("\"_type\":\"targets\"");  // in the newest targets file
  ASSERT_NE(at, std::string::npos);
  meta_tampered[at + 10] ^= 1;
  ExpectResult(agent_->ApplyBundle(bytes(meta_tampered), false), "failed", "mix-and-match");
  // Tampered: one byte of the package changed.
  std::string tampered = good;
  at = tampered.find(v2_.substr(v2_.size() - 40, 32));  // its signature: unique
  ASSERT_NE(at, std::string::npos);
  tampered[at] ^= 1;
  ExpectResult(agent_->ApplyBundle(bytes(tampered), false), "failed", "sha256 does not match");
  // A whole repository signed by other keys (its root does not chain from ours).
  TestRepo forged(clock_);
  forged.Publish({v2_}, {signer_.public_key()});
  ExpectResult(agent_->ApplyBundle(bytes(forged.Bundle("g1")), false), "failed",
               "valid signature(s)");
  ExpectResult(agent_->ApplyBundle(bytes("not a bundle"), false), "failed", "magic");
  EXPECT_EQ(Installed(), "1.0");

  UpdateOutcome o = agent_->ApplyBundle(bytes(good), false);
  ExpectResult(o, "ok", "blink 2.0");
  EXPECT_FALSE(o.reported);
  EXPECT_EQ(Installed(), "2.0");
}

TEST(UpdateBundle, RoundTripsAndRefusesMalformedContainers) {
  std::map<std::string, std::string> files = {{"1.root.json", "{}"},
                                              {"targets/ab.x.imagepackage", "data"}};
  auto b = formats::SerializeUpdateBundle("g1", files);
  ASSERT_TRUE(b);
  auto v = formats::ParseUpdateBundle(*b);
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(v->group_id, "g1");
  EXPECT_EQ(v->files.at("targets/ab.x.imagepackage"), "data");
  auto truncated = *b;
  truncated.pop_back();
  EXPECT_FALSE(formats::ParseUpdateBundle(truncated));
  auto trailing = *b;
  trailing.push_back(0);
  EXPECT_FALSE(formats::ParseUpdateBundle(trailing));
  EXPECT_FALSE(formats::SerializeUpdateBundle("g1", {{"../etc/passwd", ""}}));
  EXPECT_FALSE(formats::SerializeUpdateBundle("g1", {{"targets/.hidden", ""}}));
}

// kill -9 at every step of a whole online check (trusted metadata saves and the install), then a
// restart: the app is the old or the new version, trusted metadata parses, and the next check
// completes the update.
TEST_F(UpdateAgentTest, KillAtEveryStepOfACheckThenRestart) {
  std::vector<std::string_view> steps(std::begin(kTrustedStoreCrashPoints),
                                      std::end(kTrustedStoreCrashPoints));
  steps.insert(steps.end(), std::begin(kInstallCrashPoints), std::end(kInstallCrashPoints));
  for (std::string_view step : steps) {
    SCOPED_TRACE(std::string(step));
    agent_.reset();
    store_.reset();
    fs::remove_all(dir_->path() / "apps");
    fs::remove_all(dir_->path() / "update");
    TestRepo repo(clock_);
    transport_.repos["g1"] = &repo;
    repo.Publish({v1_}, {signer_.public_key()});
    Reopen();
    ExpectResult(agent_->Check(false), "ok");
    repo.Publish({v2_}, {signer_.public_key()});
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      setenv("MOAT_TEST_CRASH_AT", std::string(step).c_str(), 1);
      (void)agent_->Check(false);
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "not reached";
    Reopen();
    auto version = Installed();
    ASSERT_TRUE(version);
    EXPECT_TRUE(*version == "1.0" || *version == "2.0") << *version;
    for (auto role :
         {tuf::Role::kRoot, tuf::Role::kTimestamp, tuf::Role::kSnapshot, tuf::Role::kTargets}) {
      auto text = ReadFile(
          dir_->path() / "update" / "tuf" / "g1" / fmt::format("{}.json", tuf::RoleName(role)),
          1 << 20);
      if (!text) continue;  // not yet saved is fine; half-written is not
      EXPECT_TRUE(ParseJson(*text, "trusted")) << tuf::RoleName(role);
    }
    UpdateOutcome o = agent_->Check(false);
    EXPECT_TRUE(o.result == "ok" || o.result == "none") << o.result << ": " << o.detail;
    EXPECT_EQ(Installed(), "2.0");
    transport_.repos["g1"] = &repo_;
  }
}

}  // namespace
}  // namespace moat::device::update
