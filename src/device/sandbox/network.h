// Network: every sandbox has its own network namespace (namespaces.h). With NetworkMode::kNone it
// holds only the loopback interface, which the child brings up; with kConfigured the launcher's
// network hook (launcher.h) adds interfaces and rules from the parent before the child proceeds
// (AppNetwork in app_network.h enforces a NetworkPolicy that way).
#pragma once

#include "device/sandbox/child_step.h"

namespace moat::device::sandbox {

// Child-side, inside the new network namespace: sets IFF_UP on "lo".
StepStatus BringUpLoopback();

}  // namespace moat::device::sandbox
