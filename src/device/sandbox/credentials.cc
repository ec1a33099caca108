#include "device/sandbox/credentials.h"

#include <sys/syscall.h>
#include <unistd.h>

namespace moat::device::sandbox {

StepStatus SwitchToAppIds(uid_t uid, gid_t gid, ChildStep& step) {
  // SECURITY: groups first, then gid, then uid: once the uid is no longer 0 the process lacks
  // CAP_SETGID and could not drop root's groups any more.
  step = ChildStep::kSetgroups;
  if (::syscall(SYS_setgroups, 0, nullptr) != 0) return StepStatus::FromErrno();
  step = ChildStep::kSetresgid;
  if (::syscall(SYS_setresgid, gid, gid, gid) != 0) return StepStatus::FromErrno();
  step = ChildStep::kSetresuid;
  if (::syscall(SYS_setresuid, uid, uid, uid) != 0) return StepStatus::FromErrno();
  return {};
}

}  // namespace moat::device::sandbox
