// The sandbox's PID 1: a minimal init inside the new PID namespace.
//
// Why not make the app PID 1: the kernel drops every signal sent to a namespace's init for which
// it has no handler, so an app that does not handle SIGTERM would ignore the supervisor's stop
// request, and orphaned grandchildren would never be reaped. So the first process in the sandbox
// (the launcher's clone) stays as a tiny init: it forks the app, forwards SIGTERM, SIGINT,
// SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it, reaps every child, and when the app exits it writes
// the app's raw wait status to the status pipe and exits (128 + signal, or the app's exit code).
// Its exit makes the kernel kill whatever else is left in the namespace. SIGKILL from the
// supervisor kills the init and therefore the whole sandbox at once.
//
// The init runs with the same uid, capabilities (none), Landlock domain and mounts as the app,
// under an even smaller seccomp filter (seccomp_policy.h: BuildInitFilter).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <span>

#include "device/sandbox/child_step.h"
#include "device/sandbox/seccomp_policy.h"

namespace moat::device::sandbox {

// The signals the init forwards to the app.
std::span<const int> ForwardedSignals();

// Child-side, in the init before it forks the app: installs no-op handlers (so the kernel queues
// these signals for PID 1 instead of dropping them) and blocks the forwarded signals and
// SIGCHLD, so none is lost before the wait loop runs.
StepStatus PrepareInitSignals();

// Child-side, in the app between fork and execve: restores default dispositions and an empty
// signal mask.
StepStatus ResetSignalsForApp();

// Child-side. Installs the init's filter, closes `error_fd` (the app holds its own copy until
// execve), then forwards and reaps until the app exits; writes its wait status to `status_fd`
// and exits. If installing the filter fails, reports it on `error_fd`, kills the app and exits.
[[noreturn]] void RunInit(pid_t app, int status_fd, int error_fd, const BpfProgram& init_filter);

}  // namespace moat::device::sandbox
