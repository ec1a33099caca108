// The supervisor: runs a set of sandboxed apps, restarts them when they end, and reports their
// failures.
//
// Each app is a SandboxSpec (spec_builder.h) with its component and image IDs. Once added, an app
// is kept running: when it ends it is restarted after the RestartPolicy's backoff
// (restart_policy.h). Every abnormal end — killed by a signal, a non-zero exit, a kill for
// exceeding its memory limit (seen in its cgroup's oom_kill counter), or a launch that failed —
// yields a formats::FailureEvent given to `on_failure`; a clean exit (status 0) is restarted but
// is not a failure. `crash_loop_crashes` failures within `crash_loop_window` also call
// `on_crash_loop` with the component ID, so the update agent can roll back. The app keeps being
// restarted (at the capped delay) until it is removed.
//
// Isolation: each app has its own sandbox, cgroups, pipes, log files and restart state; nothing
// one app does (crash, hang, flood its output, fail to launch) changes how another is run, except
// that launches happen one at a time.
//
// Output: the app's stdout and stderr are pipes the supervisor reads into the spec's
// stdout_path/stderr_path through AppLog (app_log.h): capped at `log_max_bytes` per file,
// rotated to "<path>.1". An empty path discards the stream.
//
// Threading: one supervisor thread, started by Create, runs an event loop over poll(2): an
// eventfd for requests, each sandbox's pidfd (readable when it ends) and its output pipes.
// Launches (blocking: up to the launch's setup timeout) and callbacks run on that thread;
// callbacks are called without the supervisor's lock held, so they may call Add/Remove (Remove
// from a callback does not wait). The public methods are thread-safe; they may wait for a
// launch in progress (the loop holds the lock while launching).
//
// Time: restart delays, the stable-run and crash-loop windows and event times come from the
// injected Clock, so tests can drive them with a FakeClock (and call Wake() after moving it). The
// stop grace period is real time: it bounds how long a real process gets to exit.
//
// Stopping: Remove() and Shutdown() send SIGTERM (forwarded to the app by the sandbox's init),
// then SIGKILL to the whole sandbox after `stop_grace`, reap it and remove its cgroups before
// returning. After Shutdown() (or destruction) no process of any app is left.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/clock.h"
#include "core/error.h"
#include "core/random.h"
#include "device/sandbox/cgroups.h"
#include "device/sandbox/launcher.h"
#include "device/sandbox/network_policy.h"
#include "device/sandbox/sandbox_spec.h"
#include "device/supervisor/device_auth.h"
#include "device/supervisor/restart_policy.h"
#include "device/supervisor/spec_builder.h"
#include "formats/failure_event.h"
#include "formats/guid.h"

namespace moat::device::supervisor {

struct AppLinkPool;  // supervisor.cc

struct SupervisedApp {
  sandbox::SandboxSpec spec;
  formats::Guid component_id;  // non-nil; one app per component ID
  formats::Guid image_id;
  // For spec.network == kConfigured exactly one of these (for kNone neither):
  //   network_policy: the supervisor enforces it (sandbox/app_network.h): the app gets a /30 from
  //     SupervisorOptions::network_pool while supervised, and each launch a fresh veth pair and
  //     nftables table, removed when that run ends (BuildNetworkPolicy makes the policy).
  //   network_hook: a caller-made hook, called on every launch (the caller cleans up).
  std::optional<sandbox::NetworkPolicy> network_policy;
  sandbox::NetworkHook network_hook;
  // Event notifications, update deferral and app-to-app channels (BuildAppServices).
  AppServices services;
};

// What an app answered to NotifyUpdatePending.
struct UpdateAnswer {
  enum class Kind {
    kNoAnswer,      // nothing (valid) within the timeout
    kAcknowledged,  // "ok", or "defer" from an app without SoftwareUpdateDeferral
    kDeferred,      // "defer" from an app with SoftwareUpdateDeferral
  };
  Kind kind = Kind::kNoAnswer;
  std::chrono::seconds defer_for{0};  // with kDeferred: 1 s .. kMaxUpdateDeferral

  bool operator==(const UpdateAnswer&) const = default;
};
inline constexpr std::chrono::seconds kMaxUpdateDeferral{24 * 3600};

struct SupervisorOptions {
  RestartPolicy restart;
  std::chrono::milliseconds stop_grace{5000};
  uint64_t log_max_bytes = 1 << 20;  // per stream, per file (plus one rotated file)
  std::function<void(const formats::FailureEvent&)> on_failure;
  std::function<void(const formats::Guid& component_id)> on_crash_loop;
  std::shared_ptr<const Clock> clock;                  // null: the system clock
  std::shared_ptr<Random> random;                      // event IDs; null: the system CSPRNG
  std::optional<sandbox::CgroupLayout> cgroup_layout;  // null: detected once, at Create
  // Where apps' links come from; nullopt: sandbox::kDefaultAppNetworkPool. Each moatd instance on
  // a host needs a pool of its own.
  std::optional<sandbox::Ipv4Subnet> network_pool;
  // Serves the device-authentication channel of apps whose services ask for it (device_auth.h);
  // null: Add refuses such apps (kFailedPrecondition).
  std::shared_ptr<DeviceAuthority> device_authority;
  DeviceAuthLimits device_auth_limits;
  // The longest the loop sleeps without a request; bounds how late it notices a FakeClock moved
  // without Wake().
  std::chrono::milliseconds max_poll_interval{1000};
};

enum class AppState {
  kRunning,   // a sandbox is running
  kWaiting,   // ended or failed to launch; restarts at `next_start`
  kStopping,  // SIGTERM sent; SIGKILL follows after the grace period
  kStopped,   // stopped on request (StopApp); stays supervised, starts again only by StartApp
};
std::string_view AppStateName(AppState state);

struct AppStatus {
  AppState state = AppState::kWaiting;
  std::optional<pid_t> pid;  // the sandbox's init, while running
  uint32_t launches = 0;     // successful launches
  uint32_t failures = 0;     // failure events produced
  std::optional<sandbox::ExitStatus> last_exit;
  std::optional<std::chrono::steady_clock::time_point> next_start;  // while kWaiting
  std::chrono::milliseconds last_delay{0};  // the backoff chosen at the last end
  std::string last_error;                   // the last launch error, if any
};

// One supervised app, for listings (`moatctl app list`).
struct AppInfo {
  formats::Guid component_id;
  formats::Guid image_id;
  std::string app_name;  // the sandbox name
  AppStatus status;
};

enum class LogStream { kStdout, kStderr };

class Supervisor {
 public:
  // Validates the options, detects the cgroup layout (unless given) and starts the thread.
  static Result<std::unique_ptr<Supervisor>> Create(SupervisorOptions options);

  // Shutdown().
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Adds an app and starts it (on the supervisor thread, at once). Errors: kAlreadyExists for a
  // component ID (or sandbox name) already supervised, kInvalidArgument for a nil component ID,
  // a spec or network policy that does not validate or does not match spec.network,
  // kLimitExceeded when the network pool is used up, kFailedPrecondition after Shutdown.
  Result<void> Add(SupervisedApp app);

  // Stops the app (SIGTERM, SIGKILL after the grace period), waits until its sandbox is reaped and
  // forgets it. Returns how it ended, or nullopt if it was not running. kNotFound if unknown.
  // Called from a callback, it only requests the stop and returns nullopt.
  Result<std::optional<sandbox::ExitStatus>> Remove(const formats::Guid& component_id);

  // Stops every app as Remove does, in parallel, and ends the thread. Idempotent.
  void Shutdown();

  std::optional<AppStatus> Status(const formats::Guid& component_id) const;

  // Every supervised app (stopped ones included), ordered by component ID.
  std::vector<AppInfo> List() const;

  // Stops the app like Remove (SIGTERM, SIGKILL after the grace period, reaped) but keeps it
  // supervised in state kStopped: it is not restarted, keeps its network link, restart history
  // and logs, and StartApp runs it again. Returns how it ended, or nullopt if it was not running
  // (already stopped, or waiting for a restart, which is cancelled). A requested stop is not a
  // failure. kNotFound if unknown (or being removed). From a callback it only requests the stop.
  Result<std::optional<sandbox::ExitStatus>> StopApp(const formats::Guid& component_id);

  // Starts a stopped app at once (on the supervisor thread). kNotFound if unknown,
  // kFailedPrecondition if it is not stopped.
  Result<void> StartApp(const formats::Guid& component_id);

  // The app's sandbox spec (`moatctl app show --spec`: sandbox::SpecToJson), nullopt if unknown.
  std::optional<sandbox::SandboxSpec> Spec(const formats::Guid& component_id) const;

  // The newest `max_bytes` (capped at kMaxLogTailBytes) of the app's stdout or stderr log, across
  // its rotation (ReadLogTail in app_log.h). kNotFound if unknown; "" for a discarded stream.
  Result<std::string> LogTail(const formats::Guid& component_id, LogStream stream,
                              size_t max_bytes) const;

  // Tells a running app with SystemEventNotifications that an update is pending, to be applied
  // at `deadline`, and waits up to `timeout` for its answer (protocol: docs/supervisor.md "App
  // services"). kNotFound if unknown, kFailedPrecondition if the app lacks the capability,
  // kUnavailable if it is not running. One notification at a time per supervisor.
  Result<UpdateAnswer> NotifyUpdatePending(const formats::Guid& component_id, SystemTime deadline,
                                           std::chrono::milliseconds timeout);

  // Makes the loop look at its timers now (after a FakeClock moved).
  void Wake();

 private:
  struct Slot;
  using Callback = std::function<void()>;

  explicit Supervisor(SupervisorOptions options, UniqueFd wake_fd);
  void Loop();
  // Loop helpers; called with mu_ held. They queue callbacks to run after unlocking.
  void LaunchSlot(Slot& slot, std::vector<Callback>& callbacks);
  void HandleEnd(Slot& slot, std::vector<Callback>& callbacks);
  void ReadOutput(Slot& slot, int stream, bool until_eof);
  void QueueFailure(Slot& slot, formats::FailureKind kind, int signal, int exit_status,
                    std::vector<Callback>& callbacks, const sandbox::CrashReport* crash = nullptr);
  void QueueCrashLoop(Slot& slot, std::vector<Callback>& callbacks);
  void BeginStop(Slot& slot);
  void TearDownNetwork(Slot& slot);
  void ForgetSlot(const formats::Guid& component_id);
  // Closes the app-connection channels of the app being forgotten, on both sides.
  void DropChannels(const formats::Guid& component_id, Slot& slot);

  SupervisorOptions options_;
  std::shared_ptr<const Clock> clock_;
  std::shared_ptr<Random> random_;
  UniqueFd wake_fd_;  // eventfd
  std::shared_ptr<AppLinkPool>
      pool_;  // app links; its own lock (a slot returns its link when freed)

  mutable std::mutex mu_;
  std::condition_variable changed_;  // a slot was removed
  // Shared so that the loop's poll set keeps a slot alive if Remove() erases it meanwhile.
  std::map<formats::Guid, std::shared_ptr<Slot>> slots_;
  bool shutting_down_ = false;
  std::unique_ptr<DeviceAuthServer> device_auth_;  // with options_.device_authority
  std::thread::id loop_id_;  // set once, before any app exists
  std::mutex shutdown_mu_;   // serialises Shutdown() calls (the join)
  std::mutex notify_mu_;     // serialises NotifyUpdatePending (never held with mu_ waiting)
  std::thread thread_;
};

}  // namespace moat::device::supervisor
