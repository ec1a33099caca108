// How the sandboxed child tells the launcher which step of its setup failed, and why.
//
// Code that runs in the child between clone and execve ("child-side" code, marked so in each
// header) must be async-signal-safe: the launcher may be multi-threaded, and the child of a
// multi-threaded process must not allocate or take locks another thread may have held at the
// clone (see launcher.cc). So child-side functions cannot build a Result<T> (an Error holds a
// std::string); they return a StepStatus (an errno and the index of the failing item), and the
// child writes a fixed-size ChildFailure to a CLOEXEC pipe. The launcher, which planned every
// step, turns it into an Error naming the step, its subject and the errno.
#pragma once

#include <cerrno>
#include <cstdint>

namespace moat::device::sandbox {

// The steps of the child's pipeline, in order (launcher.cc runs them).
enum class ChildStep : uint32_t {
  kUnshareCgroup,  // enter a new cgroup namespace (after the launcher moved us into our group)
  kStdio,          // index: 0..2 install stdio, 3 move the pipes, 4 close everything else
  kMount,          // index: the MountOp in the MountPlan
  kLoopback,       // bring up lo
  kHostname,
  kRlimit,  // index: the rlimit in the RlimitPlan
  kNoNewPrivs,
  kLandlock,  // index: the rule; rules.size() for create/restrict
  kSecurebits,
  kBoundingSet,  // index: the capability number
  kAmbient,
  kSetgroups,
  kSetresgid,
  kSetresuid,
  kCapset,
  kSignals,      // block/unblock the signals the init forwards
  kForkApp,      // the init forks the app
  kSeccompInit,  // the init's own filter
  kSeccompApp,   // the app's filter
  kExecve,
};

// What the child writes to the error pipe: 12 bytes, well under PIPE_BUF, so one atomic write.
struct ChildFailure {
  ChildStep step;
  uint32_t index;
  int32_t err;
};

// The result of one child-side step: err == 0 is success.
struct [[nodiscard]] StepStatus {
  int32_t err = 0;
  uint32_t index = 0;

  bool ok() const { return err == 0; }
  // The current errno (never 0: an unknown failure becomes EIO), with the failing item.
  static StepStatus FromErrno(uint32_t index = 0) {
    return StepStatus{errno != 0 ? errno : EIO, index};
  }
  static StepStatus Error(int err, uint32_t index = 0) { return StepStatus{err, index}; }
};

}  // namespace moat::device::sandbox
