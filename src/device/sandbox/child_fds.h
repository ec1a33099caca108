// File descriptor hygiene in the child: the app gets exactly stdin, stdout and stderr.
#pragma once

#include <span>

#include "device/sandbox/child_step.h"

namespace moat::device::sandbox {

// Descriptors the app may inherit at fixed numbers (LaunchOptions::inherited_fds) lie in
// [3, kFirstPrivateFd); the sandbox's own descriptors are kept at kFirstPrivateFd and above, so
// that installing the inherited ones can never clobber them.
inline constexpr int kMaxInheritedFds = 9;
inline constexpr int kFirstPrivateFd = 3 + kMaxInheritedFds + 5;

// Child-side. Installs `stdio[0..2]` as descriptors 0, 1 and 2, and closes every other descriptor
// except those in `keep`, which are first moved to kFirstPrivateFd or above (and stay
// close-on-exec); `keep` is updated with their new numbers. SECURITY: whatever else the launcher
// had open (sockets, key store handles, other sandboxes' pipes) is gone before any sandbox step
// runs. `keep` holds at most 16 descriptors. Index on failure: 0..2 for stdio, 3 for moving
// `keep`, 4 for closing.
StepStatus ArrangeChildFds(const int (&stdio)[3], std::span<int> keep);

}  // namespace moat::device::sandbox
