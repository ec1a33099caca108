// The sandbox launcher: one linear pipeline from a SandboxSpec to a running, confined app.
//
//   launcher (parent)                          child = the sandbox's PID 1 (init_process.h)
//   -----------------                          -------------------------------------------------
//   validate the spec; plan mounts, Landlock,
//   rlimits; compile seccomp filters; open
//   stdio; create the app's cgroups
//   clone3 into new mount/pid/ipc/uts/net ns ─► keep only its pipes and stdio; wait for go-ahead
//   move the child into its cgroups
//   run the network hook (if any)
//   go-ahead ─────────────────────────────────► unshare the cgroup namespace
//                                               mounts: private, new root, pivot_root (mounts.h)
//                                               bring up lo, set the hostname, rlimits
//                                               no_new_privs, Landlock
//                                               securebits, drop bounding + ambient caps
//                                               setgroups/setresgid/setresuid to the app's ids
//                                               clear the remaining capability sets
//                                               fork the app ──► reset signals, app seccomp
//                                               filter (last), execve
//                                               init seccomp filter; forward signals; reap
//   read the error pipe until EOF (= execve
//   done) or a failure report
//
// Every step is checked. A failure in the launcher, or one the child reports over the CLOEXEC
// error pipe (step + errno), kills whatever was started, removes the cgroups and returns an Error
// naming the step and its cause, e.g.
//   sandbox launch of 'hello': execve /bin/hello: No such file or directory
// so a launch either yields a fully confined app or nothing: never a half-started or degraded one.
// The one exception is Landlock on a kernel without it, where the launch goes on with every other
// layer and logs a warning.
//
// Threading: Launch may be called from any thread of a multi-threaded process; the child runs only
// allocation-free code (child_step.h). The calling process must not ignore SIGCHLD nor reap with
// waitpid(-1) (the launcher reaps its children through pidfds). Requires root and Linux >= 5.13
// (clone3 with pidfds, close_range, Landlock).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/unique_fd.h"
#include "device/sandbox/cgroups.h"
#include "device/sandbox/child_fds.h"  // kMaxInheritedFds
#include "device/sandbox/crash_capture.h"
#include "device/sandbox/sandbox_spec.h"

namespace moat::device::sandbox {

// How a sandboxed app ended.
class ExitStatus {
 public:
  enum class Kind { kExited, kKilled };

  static ExitStatus Exited(int code) { return ExitStatus(Kind::kExited, code); }
  static ExitStatus Killed(int signal) { return ExitStatus(Kind::kKilled, signal); }
  // From a wait(2) status word.
  static ExitStatus FromWaitStatus(int status);

  Kind kind() const { return kind_; }
  bool exited() const { return kind_ == Kind::kExited; }
  bool killed() const { return kind_ == Kind::kKilled; }
  int code() const { return kind_ == Kind::kExited ? value_ : -1; }
  int signal() const { return kind_ == Kind::kKilled ? value_ : 0; }

  // "exited with status 3", "killed by signal 31 (SIGSYS)".
  std::string Describe() const;
  bool operator==(const ExitStatus&) const = default;

 private:
  ExitStatus(Kind kind, int value) : kind_(kind), value_(value) {}
  Kind kind_;
  int value_;
};

// Descriptors for the app's stdout/stderr, overriding the spec's paths when valid (e.g. pipes
// the supervisor reads into bounded logs). Launch takes ownership and closes its copies.
struct LaunchIo {
  UniqueFd stdout_fd;
  UniqueFd stderr_fd;
};

// Called in the launcher after the clone, before the child proceeds, with the sandbox init's pid
// (in the launcher's PID namespace): e.g. to move one end of a veth pair into its network
// namespace (/proc/<pid>/ns/net) and install firewall rules. An error fails the launch.
using NetworkHook = std::function<Result<void>(pid_t sandbox_pid)>;

// A descriptor the app inherits at a fixed number (the supervisor's event socket, app
// connection sockets). Only the app gets it: the sandbox's init closes its copy.
struct InheritedFd {
  UniqueFd fd;
  int target = -1;  // 3 .. 3 + kMaxInheritedFds - 1 (child_fds.h), each at most once
};

struct LaunchOptions {
  LaunchIo io;
  std::vector<InheritedFd> inherited_fds;
  NetworkHook network_hook;  // required for NetworkMode::kConfigured, refused for kNone
  std::optional<CgroupLayout> cgroup_layout;       // nullopt: DetectCgroupLayout()
  std::chrono::milliseconds setup_timeout{10000};  // clone to execve
};

// A running sandbox. Move-only. Destroying one whose app is still running kills the whole
// sandbox (SIGKILL) and reaps it; the cgroups are removed either way.
class LaunchedProcess {
 public:
  LaunchedProcess(LaunchedProcess&&) noexcept = default;
  LaunchedProcess& operator=(LaunchedProcess&&) = delete;
  LaunchedProcess(const LaunchedProcess&) = delete;
  LaunchedProcess& operator=(const LaunchedProcess&) = delete;
  ~LaunchedProcess();

  const std::string& app_name() const { return app_name_; }
  // The sandbox init's pid in the launcher's PID namespace (the app is its only child).
  pid_t pid() const { return pid_; }
  // A pidfd for the sandbox init: readable (POLLIN) once the sandbox has ended.
  int pidfd() const { return pidfd_.get(); }
  std::vector<std::filesystem::path> CgroupDirectories() const { return cgroup_.Directories(); }

  // Sends `signal` to the app: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are
  // forwarded by the init; SIGKILL kills the init and with it the whole sandbox. Other signals
  // are refused (kInvalidArgument). Sending to an ended sandbox is not an error.
  Result<void> Signal(int signal);

  // Waits for the sandbox to end and returns how the app ended, then removes its cgroups.
  // Idempotent: later calls return the same status.
  Result<ExitStatus> Wait();

  // Like Wait, but gives up after `timeout` and returns nullopt if the sandbox is still running.
  Result<std::optional<ExitStatus>> WaitFor(std::chrono::milliseconds timeout);

  // Stop = SIGTERM, then SIGKILL if the app has not ended after `grace`; returns its status.
  Result<ExitStatus> Stop(std::chrono::milliseconds grace);

  // After Wait: what the sandbox's init captured when a signal killed the app (registers, fault
  // details, stack; crash_capture.h), or nullopt (the app exited, was killed by SIGKILL or a
  // seccomp kill, which have no delivery to capture, or capture was unavailable).
  const std::optional<CrashReport>& crash() const { return crash_; }

 private:
  friend class Launcher;
  LaunchedProcess(std::string app_name, pid_t pid, UniqueFd pidfd, UniqueFd status_fd,
                  AppCgroup cgroup)
      : app_name_(std::move(app_name)),
        pid_(pid),
        pidfd_(std::move(pidfd)),
        status_fd_(std::move(status_fd)),
        cgroup_(std::move(cgroup)) {}

  std::string app_name_;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd status_fd_;  // the init writes the app's wait status here before exiting
  AppCgroup cgroup_;
  std::optional<ExitStatus> status_;
  std::optional<CrashReport> crash_;
};

// Builds the sandbox `spec` describes and starts the app in it; see the file comment.
Result<LaunchedProcess> Launch(const SandboxSpec& spec, LaunchOptions options = {});

}  // namespace moat::device::sandbox
