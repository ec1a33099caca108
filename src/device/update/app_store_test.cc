// AppStore: atomic install and rollback on disk, and what a kill -9 at every step boundary
// leaves behind (the test forks, the child installs with MOAT_TEST_CRASH_AT set and is killed by
// the hook; the parent reopens the store as a restarted moatd would).
#include "device/update/app_store.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>

#include "core/file.h"
#include "device/update/crash_point.h"
#include "device/update/test_repo.h"

namespace moat::device::update {
namespace {

namespace fs = std::filesystem;
using namespace testing;
using namespace std::chrono_literals;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class AppStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("appstore");
    ASSERT_TRUE(d);
    dir_.emplace(std::move(*d));
    keys_ = {signer_.public_key()};
    v1_ = Package(signer_, "1.0");
    v2_ = Package(signer_, "2.0");
  }
  fs::path AppsDir() const { return dir_->path() / "apps"; }
  AppStore Open() {
    auto s = AppStore::Open(AppsDir(), clock_);
    EXPECT_TRUE(s) << s.error().message();
    return std::move(*s);
  }
  Result<InstalledApp> Install(AppStore& store, const std::string& package) {
    return store.Install(Bytes(package), keys_, {.component_id = kComponent});
  }
  // The installed version, after checking its tree is complete and its own.
  std::optional<std::string> InstalledVersion(AppStore& store) {
    auto app = store.Get(kComponent);
    EXPECT_TRUE(app) << app.error().message();
    if (!app || !*app) return std::nullopt;
    const InstalledImage& img = (*app)->current;
    auto content = ReadFile(img.root / "bin" / "app", 1 << 20);
    EXPECT_TRUE(content) << content.error().message();
    EXPECT_EQ(content.value_or(""), AppContent(img.version)) << "tree of " << img.version;
    EXPECT_EQ(fs::read_symlink(img.root / "bin" / "app.link"), "app");
    return img.version;
  }
  // Nothing but current, previous and their images is left in the component directory.
  void ExpectClean(AppStore& store) {
    auto app = *store.Get(kComponent);
    std::set<std::string> expected = {"current"};
    if (app) expected.insert(app->current.image_id);
    if (app && app->previous) {
      expected.insert("previous");
      expected.insert(app->previous->image_id);
    }
    std::set<std::string> found;
    const fs::path dir = AppsDir() / kComponent.ToString();
    if (!fs::exists(dir)) {
      EXPECT_FALSE(app);
      return;
    }
    for (const auto& e : fs::directory_iterator(dir)) found.insert(e.path().filename().string());
    EXPECT_EQ(found, expected);
  }

  FakeClock clock_{*ParseRfc3339("2026-12-06T12:00:00Z")};
  crypto::PrivateKey signer_ = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  std::vector<crypto::PublicKey> keys_;
  std::string v1_, v2_;
  std::optional<TempDir> dir_;
};

TEST_F(AppStoreTest, InstallsSwitchesAndKeepsPrevious) {
  AppStore store = Open();
  auto a = Install(store, v1_);
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->current.version, "1.0");
  EXPECT_EQ(a->current.image_id, ImageIdOf(v1_));
  EXPECT_FALSE(a->previous);
  EXPECT_EQ(InstalledVersion(store), "1.0");

  auto b = Install(store, v2_);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->current.version, "2.0");
  ASSERT_TRUE(b->previous);
  EXPECT_EQ(b->previous->version, "1.0");
  EXPECT_EQ(InstalledVersion(store), "2.0");
  EXPECT_EQ(fs::read_symlink(AppsDir() / kComponent.ToString() / "current"), ImageIdOf(v2_));
  EXPECT_EQ(fs::read_symlink(AppsDir() / kComponent.ToString() / "previous"), ImageIdOf(v1_));

  // A third version drops the first.
  std::string v3 = Package(signer_, "3.0");
  ASSERT_TRUE(Install(store, v3));
  EXPECT_FALSE(fs::exists(AppsDir() / kComponent.ToString() / ImageIdOf(v1_)));
  ExpectClean(store);
  auto again = Install(store, v3);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
}

TEST_F(AppStoreTest, RefusesUntrustedOrTamperedPackagesBeforeUnpacking) {
  AppStore store = Open();
  auto other = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto r = Install(store, Package(other, "1.0"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_NE(r.error().message().find("signed by unknown key"), std::string::npos);

  std::string tampered = v1_;
  tampered[tampered.size() / 2] ^= 1;
  r = Install(store, tampered);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed) << r.error().message();
  EXPECT_FALSE(fs::exists(AppsDir() / kComponent.ToString())) << "nothing may be unpacked";

  auto other_component = *formats::Guid::Parse("11111111-2222-3333-4444-555555555555");
  r = store.Install(Bytes(v1_), keys_, {.component_id = other_component});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("the update metadata says"), std::string::npos);
  r = store.Install(Bytes(v1_), keys_, {.component_id = kComponent, .version = "9.9"});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("version differs"), std::string::npos);
  EXPECT_FALSE(*store.Get(kComponent));
}

TEST_F(AppStoreTest, RollsBackOnceToPrevious) {
  AppStore store = Open();
  ASSERT_TRUE(Install(store, v1_));
  auto r = store.Rollback(kComponent);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(Install(store, v2_));
  r = store.Rollback(kComponent);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->version, "2.0");
  EXPECT_EQ(InstalledVersion(store), "1.0");
  EXPECT_FALSE((*store.Get(kComponent))->previous);
  EXPECT_FALSE(fs::exists(AppsDir() / kComponent.ToString() / ImageIdOf(v2_)));
  ExpectClean(store);
}

TEST(WriteFileTree, RefusesWritingThroughASymlink) {
  auto dir = TempDir::Create("tree");
  ASSERT_TRUE(dir);
  using K = formats::FileTreeEntry::Kind;
  std::vector<formats::FileTreeEntry> entries = {
      {.kind = K::kSymlink, .path = "a", .mode = 0777, .link_target = "b"},
      {.kind = K::kFile, .path = "a/x", .mode = 0644},
  };
  auto r = WriteFileTree(dir->path(), entries);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("no parent directory entry"), std::string::npos);
}

// Runs `body` in a child with MOAT_TEST_CRASH_AT=`step`; expects the hook to kill it.
template <typename F>
void RunKilledAt(std::string_view step, F body) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("MOAT_TEST_CRASH_AT", std::string(step).c_str(), 1);
    body();
    _exit(0);  // the step was not reached
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "step " << step << " was not reached (status " << status << ")";
}

TEST_F(AppStoreTest, KillAtEveryInstallStepLeavesOldOrNewNeverNeither) {
  bool switched = false;
  for (std::string_view step : kInstallCrashPoints) {
    SCOPED_TRACE(std::string(step));
    fs::remove_all(AppsDir());
    {
      AppStore store = Open();
      ASSERT_TRUE(Install(store, v1_));
    }
    RunKilledAt(step, [&] {
      AppStore store = Open();
      (void)Install(store, v2_);
    });
    AppStore restarted = Open();  // recovery, as at moatd's start
    auto version = InstalledVersion(restarted);
    ASSERT_TRUE(version) << "no app at all after a kill at " << step;
    if (step == "install-current-switched") switched = true;
    EXPECT_EQ(*version, switched ? "2.0" : "1.0");
    ExpectClean(restarted);
    // And the install completes after the restart.
    if (!switched) {
      ASSERT_TRUE(Install(restarted, v2_));
    }
    EXPECT_EQ(InstalledVersion(restarted), "2.0");
  }
}

TEST_F(AppStoreTest, KillDuringFirstInstallLeavesNothingOrTheApp) {
  for (std::string_view step : kInstallCrashPoints) {
    SCOPED_TRACE(std::string(step));
    fs::remove_all(AppsDir());
    RunKilledAt(step, [&] {
      AppStore store = Open();
      (void)Install(store, v1_);
    });
    AppStore restarted = Open();
    auto version = InstalledVersion(restarted);
    const bool after_switch = step == "install-current-switched" || step == "install-cleaned";
    EXPECT_EQ(version.has_value(), after_switch);
    if (version) {
      EXPECT_EQ(*version, "1.0");
    }
    ExpectClean(restarted);
  }
}

TEST_F(AppStoreTest, KillAtEveryRollbackStep) {
  for (std::string_view step : kRollbackCrashPoints) {
    SCOPED_TRACE(std::string(step));
    fs::remove_all(AppsDir());
    {
      AppStore store = Open();
      ASSERT_TRUE(Install(store, v1_));
      ASSERT_TRUE(Install(store, v2_));
    }
    RunKilledAt(step, [&] {
      AppStore store = Open();
      (void)store.Rollback(kComponent);
    });
    AppStore restarted = Open();
    EXPECT_EQ(InstalledVersion(restarted), "1.0");
    EXPECT_FALSE((*restarted.Get(kComponent))->previous);
    ExpectClean(restarted);
  }
}

}  // namespace
}  // namespace moat::device::update
