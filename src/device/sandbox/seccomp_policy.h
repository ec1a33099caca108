// Seccomp: the syscall allowlists, as decision tables, compiled to BPF with libseccomp.
//
// Deny by default: a syscall that is not in the table kills the whole app (SCMP_ACT_KILL_PROCESS,
// seen by the supervisor as death by SIGSYS), and so does a syscall from a foreign ABI (e.g. the
// 32-bit int 0x80 entry on x86_64). Every allowed group in seccomp_policy.cc carries the reason
// it is needed; syscalls whose arguments decide their danger are allowed only with argument
// filters (socket families and types, clone flags, prctl options, ioctl requests, prlimit's pid).
// DeniedSyscalls() lists, with reasons, the dangerous syscalls an app must never make; a test
// proves none of them is allowed, and launcher tests run each in a real sandbox.
//
// Filters are built in the launcher (libseccomp allocates) and installed by the child with a raw
// seccomp(2) call just before execve.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "device/sandbox/child_step.h"
#include "device/sandbox/sandbox_spec.h"

namespace moat::device::sandbox {

// The architecture a filter is built for. Sandboxes always use kNative; the others exist so the
// policy for another architecture can be compiled (and tested) on this one.
enum class SeccompArch { kNative, kX86_64, kAarch64 };

struct BpfProgram {
  std::vector<sock_filter> instructions;
};

// A syscall the policy refuses on purpose, and why (for documentation and tests).
struct DeniedSyscall {
  std::string_view name;
  std::string_view why;
};

// The app's filter for `seccomp_class`. `extra_ioctls` are ioctl request numbers the app's
// devices need beyond the terminal and socket basics (the supervisor derives them from the
// peripheral classes; empty for now).
Result<BpfProgram> BuildAppFilter(SeccompClass seccomp_class,
                                  std::span<const uint32_t> extra_ioctls = {},
                                  SeccompArch arch = SeccompArch::kNative);

// The sandbox init's own filter: it only waits for children, forwards signals, writes the app's
// exit status and exits (init_process.h).
Result<BpfProgram> BuildInitFilter(SeccompArch arch = SeccompArch::kNative);

// The names of every syscall `seccomp_class` allows unconditionally or conditionally.
std::vector<std::string_view> AllowedSyscallNames(SeccompClass seccomp_class);

// Dangerous syscalls that no class allows.
std::span<const DeniedSyscall> DeniedSyscalls();

// Child-side. Installs `program` for the calling thread (needs PR_SET_NO_NEW_PRIVS).
StepStatus ApplySeccompFilter(const BpfProgram& program);

}  // namespace moat::device::sandbox
