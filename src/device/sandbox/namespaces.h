// Namespaces: the launcher's clone into fresh namespaces, and the init's fork of the app.
//
// Design choice (see launcher.cc): the launcher uses clone3(2) with fork semantics (no
// CLONE_VM, no separate stack), not vfork or clone with a dedicated stack. The child gets a
// copy-on-write copy of the launcher, runs only async-signal-safe, allocation-free code over a
// plan the launcher computed before the clone, and ends in execve or _exit. Raw clone3 is used
// instead of fork(3) so that no atfork handlers (which take locks) run in the child.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>

#include "core/error.h"
#include "core/unique_fd.h"
#include "device/sandbox/child_step.h"

namespace moat::device::sandbox {

// Every sandbox gets new mount, PID, IPC, UTS and network namespaces at the clone. The cgroup
// namespace comes later (UnshareCgroupNamespace): its root is fixed when it is created, and it
// must be the app's own cgroup, which the launcher only moves the child into after the clone.
// There is no user namespace: the launcher runs as root and the app as its own uid in the
// initial user namespace, so the app holds no capabilities in any namespace (and seccomp forbids
// creating one).
inline constexpr uint64_t kSandboxNamespaces =
    CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;

struct ClonedChild {
  pid_t pid = 0;   // 0 in the child
  UniqueFd pidfd;  // the parent's pidfd for the child; invalid in the child
};

// Parent side. Forks into new namespaces (kSandboxNamespaces) and returns the child's pid and a
// pidfd to the parent, and {pid 0} to the child. The child must not return past its own code: it
// runs only child-side code and ends in execve or _exit. Fails (in the parent) with the errno of
// clone3, e.g. EPERM when not root.
Result<ClonedChild> CloneIntoNewNamespaces();

// Child-side. Enters a new cgroup namespace rooted at the caller's current cgroup.
StepStatus UnshareCgroupNamespace();

// Child-side. fork(2) without atfork handlers: returns the child's pid, 0 in the child, or -1
// with errno. The new process is in the caller's namespaces.
pid_t ForkWithoutHandlers();

}  // namespace moat::device::sandbox
