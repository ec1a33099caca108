#include "device/sandbox/landlock.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "core/file.h"

namespace moat::device::sandbox {
namespace {

// Rights newer than the installed <linux/landlock.h> knows (values from the kernel's UAPI).
constexpr uint64_t kFsTruncate = 1ull << 14;              // ABI 3
constexpr uint64_t kFsIoctlDev = 1ull << 15;              // ABI 5
constexpr uint64_t kScopeAbstractUnixSocket = 1ull << 0;  // ABI 6
constexpr uint64_t kScopeSignal = 1ull << 1;              // ABI 6

// struct landlock_ruleset_attr as of ABI 6; older kernels accept the larger struct as long as
// the fields they do not know are zero.
struct RulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};

constexpr uint64_t kRead =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr uint64_t kWriteTree =
    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_WRITE_FILE |
    LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_DIR |
    LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
    LANDLOCK_ACCESS_FS_MAKE_SYM | LANDLOCK_ACCESS_FS_REFER | kFsTruncate;
constexpr uint64_t kDeviceFile =
    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE | kFsTruncate;

uint64_t HandledFs(int abi) {
  uint64_t fs = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
  if (abi >= 2) fs |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) fs |= kFsTruncate;
  if (abi >= 5) fs |= kFsIoctlDev;
  return fs;
}

}  // namespace

Result<int> LandlockAbiVersion() {
  long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    if (errno == ENOSYS || errno == EOPNOTSUPP) return 0;
    return Fail(ErrnoError("landlock_create_ruleset", "ABI version", errno));
  }
  return static_cast<int>(abi);
}

LandlockPlan BuildLandlockPlan(const SandboxSpec& spec, int abi) {
  LandlockPlan plan;
  plan.abi = abi;
  if (abi <= 0) return plan;
  plan.handled_fs = HandledFs(abi);
  if (abi >= 6) plan.scoped = kScopeAbstractUnixSocket | kScopeSignal;
  auto add = [&plan](std::string path, uint64_t access) {
    plan.rules.push_back({std::move(path), access & plan.handled_fs});
  };
  add("/", kRead);
  add("/tmp", kWriteTree);
  if (spec.storage) add(std::string(kStorageMountPoint), kWriteTree);
  add("/dev/null", kDeviceFile);
  add("/dev/zero", kDeviceFile);
  add("/dev/urandom", LANDLOCK_ACCESS_FS_READ_FILE);
  for (const auto& device : spec.devices) add(device.native(), kDeviceFile | kFsIoctlDev);
  return plan;
}

StepStatus ApplyLandlock(const LandlockPlan& plan) {
  if (plan.abi <= 0) return {};
  const uint32_t n = static_cast<uint32_t>(plan.rules.size());
  RulesetAttr attr{plan.handled_fs, 0, plan.scoped};
  int ruleset = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
  if (ruleset < 0) return StepStatus::FromErrno(n);
  for (uint32_t i = 0; i < n; ++i) {
    int fd = ::open(plan.rules[i].path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) {
      StepStatus s = StepStatus::FromErrno(i);
      ::close(ruleset);
      return s;
    }
    struct landlock_path_beneath_attr beneath {};
    beneath.allowed_access = plan.rules[i].access;
    beneath.parent_fd = fd;
    long rc = ::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0);
    StepStatus s = rc == 0 ? StepStatus{} : StepStatus::FromErrno(i);
    ::close(fd);
    if (!s.ok()) {
      ::close(ruleset);
      return s;
    }
  }
  long rc = ::syscall(SYS_landlock_restrict_self, ruleset, 0);
  StepStatus s = rc == 0 ? StepStatus{} : StepStatus::FromErrno(n + 1);
  ::close(ruleset);
  return s;
}

}  // namespace moat::device::sandbox
