#include "device/sandbox/cgroups.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "core/file.h"

namespace moat::device::sandbox {
namespace {

// A hybrid host like this project's CI: memory and pids on v1, an empty cgroup2 on the side.
constexpr std::string_view kHybridMountinfo =
    "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:28 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
constexpr std::string_view kHybridSelf =
    "8:pids:/\n4:memory:/process_api/8e3a\n3:cpuset:/\n1:cpu:/\n0::/\n";

constexpr std::string_view kV2Mountinfo =
    "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";

TEST(CgroupLayoutTest, HybridUsesTheV1HierarchiesAndOurOwnGroup) {
  auto layout = ResolveCgroupLayout(kHybridMountinfo, kHybridSelf, "");
  ASSERT_TRUE(layout) << layout.error().message();
  EXPECT_EQ(layout->memory.version, CgroupVersion::kV1);
  EXPECT_EQ(layout->memory.Base(), "/sys/fs/cgroup/memory/process_api/8e3a");
  EXPECT_EQ(layout->pids.version, CgroupVersion::kV1);
  EXPECT_EQ(layout->pids.Base(), "/sys/fs/cgroup/pids");
  ASSERT_TRUE(layout->cpuset);
  EXPECT_EQ(layout->cpuset->Base(), "/sys/fs/cgroup/cpuset");
}

TEST(CgroupLayoutTest, PureV2UsesTheUnifiedHierarchy) {
  auto layout = ResolveCgroupLayout(kV2Mountinfo, "0::/system.slice/moatd.service\n",
                                    "cpuset cpu io memory pids\n");
  ASSERT_TRUE(layout) << layout.error().message();
  EXPECT_EQ(layout->memory.version, CgroupVersion::kV2);
  EXPECT_EQ(layout->memory.Base(), "/sys/fs/cgroup/system.slice/moatd.service");
  EXPECT_EQ(layout->pids, layout->memory);
  ASSERT_TRUE(layout->cpuset);
  EXPECT_EQ(*layout->cpuset, layout->memory);
}

TEST(CgroupLayoutTest, AMissingControllerIsAnError) {
  auto layout = ResolveCgroupLayout(kV2Mountinfo, "0::/\n", "cpu io pids\n");
  ASSERT_FALSE(layout);
  EXPECT_EQ(layout.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(layout.error().message(),
            "cgroup controller 'memory' is not available: no v1 hierarchy has it and the v2 group "
            "does not offer it (cgroup.controllers: 'cpu io pids\n')");
}

TEST(CgroupLayoutTest, AHierarchyMountedBelowItsRootIsRelativeToThatRoot) {
  constexpr std::string_view mountinfo =
      "40 30 0:29 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
      "41 30 0:30 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
  auto layout =
      ResolveCgroupLayout(mountinfo, "5:memory:/docker/abc/app\n4:pids:/docker/abc\n", "");
  ASSERT_TRUE(layout) << layout.error().message();
  EXPECT_EQ(layout->memory.Base(), "/sys/fs/cgroup/memory/app");
  EXPECT_EQ(layout->pids.Base(), "/sys/fs/cgroup/pids");
  auto outside = ResolveCgroupLayout(mountinfo, "5:memory:/other\n4:pids:/docker/abc\n", "");
  ASSERT_FALSE(outside);
  EXPECT_EQ(outside.error().code(), ErrorCode::kFailedPrecondition);
}

class CgroupHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    auto layout = DetectCgroupLayout();
    ASSERT_TRUE(layout) << layout.error().message();
    layout_ = *layout;
    instance_ = fmt::format("cgtest{}", getpid());
  }
  void TearDown() override {
    if (!layout_) return;
    EXPECT_TRUE(RemoveInstanceCgroups(*layout_, instance_));
    EXPECT_FALSE(std::filesystem::exists(layout_->memory.Base() / ("moat-" + instance_)));
    EXPECT_FALSE(std::filesystem::exists(layout_->pids.Base() / ("moat-" + instance_)));
  }
  std::string Read(const std::filesystem::path& p) {
    auto text = ReadFile(p, 4096);
    return text ? *text : "<" + text.error().message() + ">";
  }
  std::optional<CgroupLayout> layout_;
  std::string instance_;
};

TEST_F(CgroupHostTest, CreateSetsLimitsAndRemoveCleansUp) {
  CgroupLimits limits{.memory_bytes = 32 << 20, .pids_max = 7};
  auto group = AppCgroup::Create(*layout_, instance_, "app", limits);
  ASSERT_TRUE(group) << group.error().message();
  auto dirs = group->Directories();
  ASSERT_FALSE(dirs.empty());
  for (const auto& dir : dirs) {
    EXPECT_EQ(dir.filename(), "app");
    EXPECT_EQ(dir.parent_path().filename(), "moat-" + instance_);
    EXPECT_TRUE(std::filesystem::is_directory(dir));
  }
  std::filesystem::path memory_dir = layout_->memory.Base() / ("moat-" + instance_) / "app";
  std::filesystem::path pids_dir = layout_->pids.Base() / ("moat-" + instance_) / "app";
  if (layout_->memory.version == CgroupVersion::kV1) {
    EXPECT_EQ(Read(memory_dir / "memory.limit_in_bytes"), "33554432\n");
  } else {
    EXPECT_EQ(Read(memory_dir / "memory.max"), "33554432\n");
  }
  EXPECT_EQ(Read(pids_dir / "pids.max"), "7\n");
  ASSERT_TRUE(group->Remove());
  for (const auto& dir : dirs) EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_FALSE(std::filesystem::exists(memory_dir.parent_path()));
}

TEST_F(CgroupHostTest, ALeftoverFromACrashedRunIsKilledAndReplaced) {
  // A "crashed moatd" left a group with a live process in it.
  auto first = AppCgroup::Create(*layout_, instance_, "app", {});
  ASSERT_TRUE(first);
  pid_t leftover = fork();
  if (leftover == 0) {
    for (;;) pause();
  }
  ASSERT_TRUE(first->AddProcess(leftover));
  auto dirs = first->Directories();
  // Forget the group without removing it, as a crash would.
  auto* leaked = new AppCgroup(std::move(*first));
  (void)leaked;  // intentionally leaked: its destructor must not run

  auto second = AppCgroup::Create(*layout_, instance_, "app", {});
  ASSERT_TRUE(second) << second.error().message();
  int status = 0;
  ASSERT_EQ(waitpid(leftover, &status, 0), leftover);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_EQ(Read(second->Directories().front() / "cgroup.procs"), "");
  EXPECT_TRUE(second->Remove());
}

TEST_F(CgroupHostTest, NamesCannotEscapeTheInstanceGroup) {
  auto bad = AppCgroup::Create(*layout_, instance_, "../../escape", {});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace moat::device::sandbox
