// Landlock: a second, path-based layer of file access control inside the sandbox.
//
// The mounts already make everything but /tmp and /mnt/storage read-only; Landlock repeats that
// rule in a form the app cannot change even if it found a way around a mount (e.g. a writable
// procfs file): read and execute beneath "/", read-write beneath /tmp and the storage, read-write
// (and device ioctls) on the listed device nodes, nothing else. Where the kernel's Landlock ABI
// has scopes (v6), the app can also neither signal processes nor reach abstract UNIX sockets
// outside its own sandbox.
//
// If the kernel lacks Landlock (ABI 0), the plan is empty and the launcher logs a note; every
// other layer still applies. Any failure on a kernel that has it fails the launch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "device/sandbox/child_step.h"
#include "device/sandbox/sandbox_spec.h"

namespace moat::device::sandbox {

struct LandlockRule {
  std::string path;  // inside the sandbox, opened after pivot_root
  uint64_t access = 0;
};

struct LandlockPlan {
  int abi = 0;              // the kernel's Landlock ABI version; 0: not available, nothing to do
  uint64_t handled_fs = 0;  // every file system right this ABI knows: all denied unless granted
  uint64_t scoped = 0;
  std::vector<LandlockRule> rules;
};

// The running kernel's Landlock ABI version, 0 if it has none (ENOSYS, EOPNOTSUPP).
Result<int> LandlockAbiVersion();

// Launcher side. The rules for `spec` under ABI `abi` (0 gives an empty plan).
LandlockPlan BuildLandlockPlan(const SandboxSpec& spec, int abi);

// Child-side, after pivot_root and PR_SET_NO_NEW_PRIVS (or with CAP_SYS_ADMIN). Index on failure:
// the rule's index, rules.size() for creating the ruleset, rules.size() + 1 for restricting.
StepStatus ApplyLandlock(const LandlockPlan& plan);

}  // namespace moat::device::sandbox
