// Crash-loop rollback end to end, as root: a real supervisor runs a real sandboxed app installed
// by the update agent; version 2 crashes at start, the supervisor reports the crash loop, the
// update agent rolls back and version 1 runs again.
#include "device/agent/app_runner.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/file.h"
#include "device/sandbox/cgroups.h"
#include "device/update/test_repo.h"

namespace moat::device::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using update::testing::FakeTransport;
using update::testing::kComponent;
using update::testing::TestRepo;

std::string AppPackage(const crypto::PrivateKey& key, std::string_view version,
                       std::string_view mode, std::string_view capabilities = "",
                       std::string_view arg = "") {
  formats::ImagePackageHeader h;
  h.component_id = kComponent;
  h.image_id = *formats::Guid::Parse("db81a79a-7ec4-435d-9cac-b2bfe2f2e38b");
  h.version = std::string(version);
  h.name = "testapp";
  h.created = *ParseRfc3339("2026-11-27T19:46:27Z");
  auto binary = ReadFileBytes(MOAT_SANDBOX_TEST_APP, 64 << 20);
  EXPECT_TRUE(binary);
  std::vector<formats::FileTreeEntry> files = {
      {.kind = formats::FileTreeEntry::Kind::kDirectory, .path = "bin", .mode = 0755},
      {.kind = formats::FileTreeEntry::Kind::kFile,
       .path = "bin/test_app",
       .mode = 0755,
       .data = *binary},
  };
  std::string manifest = fmt::format(
      R"({{"SchemaVersion":1,"Name":"testapp","ComponentId":"{}","EntryPoint":"/bin/test_app",)"
      R"("CmdArgs":["{}"{}],"Capabilities":{{{}}},"ApplicationType":"Default"}})",
      kComponent.ToString(), mode, arg.empty() ? "" : fmt::format(R"(,"{}")", arg), capabilities);
  auto p = formats::BuildImagePackage(h, manifest, files, key, 1);
  EXPECT_TRUE(p) << p.error().message();
  return p ? std::string(p->begin(), p->end()) : std::string();
}

TEST(AppRunner, RefusesToRunAppsWithoutRootOrBoard) {
  Config config;
  config.state_dir = "/nonexistent";
  auto r = AppRunner::Create(config, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message().find(::geteuid() == 0 ? "config.supervisor.board"
                                                      : "not running as root"),
            std::string::npos)
      << r.error().message();
}

TEST(AppRunner, CrashLoopAfterUpdateRollsBackToTheRunningPreviousVersion) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (real sandboxes)";
  auto dir = TempDir::Create("apprunner");
  ASSERT_TRUE(dir);
  Config config;
  config.state_dir = dir->path();
  config.supervisor.board =
      fs::path(MOAT_SOURCE_DIR) / "tests" / "data" / "hardware" / "generic_linux_board.json";
  config.supervisor.instance_id = fmt::format("updt{}", ::getpid());
  config.supervisor.run_dir = dir->path() / "run";
  config.supervisor.crash_loop_crashes = 2;
  config.supervisor.crash_loop_window = 600s;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<formats::Guid> loops;
  size_t failures = 0;
  auto runner = AppRunner::Create(config, {.on_failure =
                                               [&](const formats::FailureEvent&) {
                                                 std::lock_guard lock(mu);
                                                 ++failures;
                                               },
                                           .on_crash_loop =
                                               [&](const formats::Guid& c) {
                                                 std::lock_guard lock(mu);
                                                 loops.push_back(c);
                                                 cv.notify_all();
                                               }});
  ASSERT_TRUE(runner) << runner.error().message();

  SystemClock clock;
  auto store = update::AppStore::Open(StateLayout(config.state_dir).apps(), clock);
  ASSERT_TRUE(store);
  TestRepo repo(clock);
  FakeTransport transport;
  transport.group = "g1";
  transport.repos["g1"] = &repo;
  update::UpdateHooks hooks;
  hooks.on_app_changed = [&](const update::InstalledApp& app) { return (*runner)->Run(app); };
  hooks.stop_app = [&](const formats::Guid& c) { (*runner)->Stop(c); };
  hooks.running = [&] { return (*runner)->Running(); };
  auto agent = update::UpdateAgent::Open(config.state_dir, *store, &transport, hooks, clock, {});
  ASSERT_TRUE(agent);

  auto signer = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  repo.Publish({AppPackage(signer, "1.0", "sleep")}, {signer.public_key()});
  auto o = (*agent)->Check(false);
  ASSERT_EQ(o.result, "ok") << o.detail;
  auto running_version = [&]() -> std::string {
    for (const auto& a : (*runner)->Status()) {
      if (a["state"] == "running") return a["version"];
    }
    return "";
  };
  auto wait_until = [](auto pred) {
    for (int i = 0; i < 3000 && !pred(); ++i) std::this_thread::sleep_for(10ms);
    return pred();
  };
  ASSERT_TRUE(wait_until([&] { return running_version() == "1.0"; }));

  repo.Publish({AppPackage(signer, "2.0", "crash")}, {signer.public_key()});
  o = (*agent)->Check(false);
  ASSERT_EQ(o.result, "ok") << o.detail;
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 60s, [&] { return !loops.empty(); })) << "no crash loop";
    EXPECT_EQ(loops.front(), kComponent);
    EXPECT_GE(failures, 2u);
  }
  // moatd hands the crash loop to its update thread; here the test is that thread.
  o = (*agent)->HandleCrashLoop(kComponent);
  EXPECT_EQ(o.result, "rolled-back") << o.detail;
  EXPECT_TRUE(o.reported);
  EXPECT_EQ(transport.statuses.back()["last_update"]["result"], "rolled-back");
  EXPECT_TRUE(wait_until([&] { return running_version() == "1.0"; })) << (*runner)->Status().dump();
  EXPECT_EQ((*(*store).Get(kComponent))->current.version, "1.0");
  // Not reinstalled by the next check against the same targets.
  o = (*agent)->Check(false);
  EXPECT_EQ(o.result, "none") << o.detail;
  EXPECT_EQ(running_version(), "1.0");
  (*runner)->Shutdown();
  auto layout = sandbox::DetectCgroupLayout();
  if (layout) (void)sandbox::RemoveInstanceCgroups(*layout, config.supervisor.instance_id);
}

// The update agent tells an app with SystemEventNotifications about its pending update over the
// app's events socket (the real protocol, answered by the real sandboxed app); a "defer" from an
// app with SoftwareUpdateDeferral holds the update back, asked again when the deferral ends, and
// never beyond max_deferral; without SoftwareUpdateDeferral the answer changes nothing.
TEST(AppRunner, UpdatePendingIsToldToTheAppWhichMayDeferWithinTheBound) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (real sandboxes)";
  auto dir = TempDir::Create("apprunner");
  ASSERT_TRUE(dir);
  Config config;
  config.state_dir = dir->path();
  config.supervisor.board =
      fs::path(MOAT_SOURCE_DIR) / "tests" / "data" / "hardware" / "generic_linux_board.json";
  config.supervisor.instance_id = fmt::format("defer{}", ::getpid());
  config.supervisor.run_dir = dir->path() / "run";
  auto runner = AppRunner::Create(config, {});
  ASSERT_TRUE(runner) << runner.error().message();

  FakeClock clock(SystemClock().Now());
  auto store = update::AppStore::Open(StateLayout(config.state_dir).apps(), clock);
  ASSERT_TRUE(store);
  TestRepo repo(clock);
  FakeTransport transport;
  transport.group = "g1";
  transport.repos["g1"] = &repo;
  int asked = 0;
  update::UpdateHooks hooks;
  hooks.on_app_changed = [&](const update::InstalledApp& app) { return (*runner)->Run(app); };
  hooks.running = [&] { return (*runner)->Running(); };
  hooks.update_pending = [&](const formats::Guid& c, SystemTime now) {
    ++asked;
    return (*runner)->AskUpdateDeferral(c, now, 20s);
  };
  update::UpdateAgentOptions options;
  options.max_deferral = 3600s;
  auto agent =
      update::UpdateAgent::Open(config.state_dir, *store, &transport, hooks, clock, options);
  ASSERT_TRUE(agent);
  auto wait_until = [](auto pred) {
    for (int i = 0; i < 3000 && !pred(); ++i) std::this_thread::sleep_for(10ms);
    return pred();
  };
  auto running_version = [&]() -> std::string {
    for (const auto& a : (*runner)->Status()) {
      if (a["state"] == "running") return a["version"];
    }
    return "";
  };
  auto stdout_has = [&](std::string_view text) {
    auto log = (*runner)->Logs(kComponent, supervisor::LogStream::kStdout, 100);
    return log && log->find(text) != std::string::npos;
  };

  auto signer = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  const std::string v1 =
      AppPackage(signer, "1.0", "events",
                 R"("SystemEventNotifications":true,"SoftwareUpdateDeferral":true)", "defer");
  repo.Publish({v1}, {signer.public_key()});
  auto o = (*agent)->Check(false);
  ASSERT_EQ(o.result, "ok") << o.detail;
  EXPECT_EQ(asked, 0);  // a first install has nobody to ask
  ASSERT_TRUE(wait_until([&] { return stdout_has("events fd=3"); }));

  // The app answers "defer <seq> 600": held back for 600 s.
  const std::string v2 = AppPackage(signer, "2.0", "sleep");
  repo.Publish({v2}, {signer.public_key()});
  o = (*agent)->Check(false);
  EXPECT_EQ(o.result, "deferred") << o.detail;
  EXPECT_NE(o.detail.find("deferred by the app"), std::string::npos) << o.detail;
  EXPECT_EQ(asked, 1);
  EXPECT_TRUE(wait_until([&] { return stdout_has("got update-pending 1 "); }));
  EXPECT_EQ(running_version(), "1.0");
  // Within the deferral the app is not asked again.
  clock.Advance(300s);
  repo.Publish({v2}, {signer.public_key()});
  o = (*agent)->Check(false);
  EXPECT_EQ(o.result, "deferred") << o.detail;
  EXPECT_EQ(asked, 1);
  // After it, asked again (sequence 2), and it defers again.
  clock.Advance(301s);
  repo.Publish({v2}, {signer.public_key()});
  o = (*agent)->Check(false);
  EXPECT_EQ(o.result, "deferred") << o.detail;
  EXPECT_EQ(asked, 2);
  EXPECT_TRUE(wait_until([&] { return stdout_has("got update-pending 2 "); }));
  // Past max_deferral (1 h from when the device first saw 2.0) the update goes in regardless.
  clock.Advance(3000s);
  repo.Publish({v2}, {signer.public_key()});
  o = (*agent)->Check(false);
  EXPECT_EQ(o.result, "ok") << o.detail;
  EXPECT_TRUE(wait_until([&] { return running_version() == "2.0"; })) << (*runner)->Status().dump();

  // An app without SoftwareUpdateDeferral is told, and its "defer" changes nothing.
  const std::string v3 =
      AppPackage(signer, "3.0", "events", R"("SystemEventNotifications":true)", "defer");
  repo.Publish({v3}, {signer.public_key()});
  ASSERT_EQ((*agent)->Check(false).result, "ok");
  ASSERT_TRUE(wait_until([&] { return running_version() == "3.0" && stdout_has("events fd=3"); }));
  const std::string v4 = AppPackage(signer, "4.0", "sleep");
  repo.Publish({v4}, {signer.public_key()});
  const int before = asked;
  o = (*agent)->Check(false);
  EXPECT_EQ(o.result, "ok") << o.detail;
  EXPECT_EQ(asked, before + 1);
  EXPECT_TRUE(wait_until([&] { return running_version() == "4.0"; }));
  (*runner)->Shutdown();
}

}  // namespace
}  // namespace moat::device::agent
