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
                       std::string_view mode) {
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
      R"("CmdArgs":["{}"],"Capabilities":{{}},"ApplicationType":"Default"}})",
      kComponent.ToString(), mode);
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

}  // namespace
}  // namespace moat::device::agent
