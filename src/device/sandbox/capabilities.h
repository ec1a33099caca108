// Capabilities: the app holds none, in any set, and cannot regain them.
//
// Two phases around the uid switch (credentials.h):
//   before: lock the securebits (no root privileges on exec, no keep-caps, no ambient raising),
//           empty the bounding set and the ambient set. These need CAP_SETPCAP, so they must
//           happen while the child is still root.
//   after:  clear the effective, permitted and inheritable sets (setresuid away from 0 already
//           clears effective and permitted; this makes it explicit and covers inheritable).
// The cap_t for the second phase is allocated in the launcher (libcap allocates); the child only
// calls libcap's set functions, which are thin syscall wrappers and do not allocate.
#pragma once

#include <sys/capability.h>

#include <memory>

#include "core/error.h"
#include "device/sandbox/child_step.h"

namespace moat::device::sandbox {

struct CapFree {
  void operator()(cap_t c) const { cap_free(c); }
};
using EmptyCapSet = std::unique_ptr<std::remove_pointer_t<cap_t>, CapFree>;

// Launcher side: an all-clear capability state for the child to install.
Result<EmptyCapSet> MakeEmptyCapSet();

// Child-side, while still root. On failure `step` says which call failed (index: the capability).
StepStatus DropBoundingAndAmbient(ChildStep& step);

// Child-side, after the uid switch.
StepStatus ClearProcessCapabilities(const EmptyCapSet& empty);

}  // namespace moat::device::sandbox
