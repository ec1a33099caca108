// Credentials: the app runs as its own uid and gid, with no supplementary groups.
#pragma once

#include <sys/types.h>

#include "device/sandbox/child_step.h"

namespace moat::device::sandbox {

// Child-side. setgroups(0), setresgid(gid x3), setresuid(uid x3), through raw syscalls: glibc's
// wrappers broadcast id changes to every thread it believes exists, and after the launcher's
// clone those threads are not there. Returns the failing call in `step`.
StepStatus SwitchToAppIds(uid_t uid, gid_t gid, ChildStep& step);

}  // namespace moat::device::sandbox
