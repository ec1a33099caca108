// Runs the installed apps: owns the supervisor (device/supervisor), turns an installed image into
// a SupervisedApp (manifest + the board's hardware definition + the device policy, through
// spec_builder), keeps each app's uid/gid across updates (<state>/app-ids.json), and restarts an
// app on the version the update agent just switched to.
//
// Sandboxing needs root (namespaces, cgroups, mounts, nftables): Create fails with
// kFailedPrecondition naming that when moatd is not root, and when no board is configured.
//
// Several moatd on one host: Create claims the instance (instance.h: its lock, network pool and
// uid range) and removes what an earlier run of the same instance left behind (cgroups, veths,
// nftables tables: a moatd killed with SIGKILL cannot clean up); Shutdown removes them again.
//
// Thread-safety: every method but Shutdown may be called from any thread (the supervisor is
// thread-safe; the id map has its own lock).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "core/json.h"
#include "device/agent/config.h"
#include "device/agent/instance.h"
#include "device/supervisor/spec_builder.h"
#include "device/supervisor/supervisor.h"
#include "device/update/app_store.h"
#include "formats/hardware_definition.h"

namespace moat::device::agent {

class AppRunner {
 public:
  struct Callbacks {
    std::function<void(const formats::FailureEvent&)> on_failure;
    std::function<void(const formats::Guid& component_id)> on_crash_loop;
    // Serves apps with DeviceAuthentication (supervisor/device_auth.h); null: such apps are
    // refused at start.
    std::shared_ptr<supervisor::DeviceAuthority> device_authority;
  };
  static Result<std::unique_ptr<AppRunner>> Create(const Config& config, Callbacks callbacks);
  ~AppRunner();

  // Starts `app`'s current image, replacing whatever version of the component ran before.
  Result<void> Run(const update::InstalledApp& app);
  // Stops `component`'s app (waits until its sandbox is gone); no-op if it is not supervised.
  void Stop(const formats::Guid& component);
  std::vector<formats::Guid> Running() const;
  Json Status() const;
  // Stops every app (Supervisor::Shutdown) and removes the instance's cgroups, interfaces and
  // nftables tables. Idempotent.
  void Shutdown();

  // Operator commands (`moatctl app ...`). `app` is a component ID or an app's name; an unknown
  // one is kNotFound naming it.
  Result<formats::Guid> Resolve(std::string_view app) const;
  // Every supervised app: component_id, image_id, name, version, state, pid, launches,
  // failures, last_exit, last_error, next_start_in_ms.
  Json List() const;
  // One app as in List(); with `spec`, also "spec" (sandbox::SpecToJson) and "spec_text".
  Result<Json> Show(const formats::Guid& component, bool spec) const;
  // Stops the app and keeps it stopped (Supervisor::StopApp); returns {"was_running", "exit"}.
  Result<Json> StopApp(const formats::Guid& component);
  Result<void> StartApp(const formats::Guid& component);
  // The last `lines` lines (at most kMaxLogBytes: the answer must fit the control socket's 1 MiB)
  // of the app's stdout or stderr log.
  static constexpr size_t kMaxLogBytes = 256 << 10;
  Result<std::string> Logs(const formats::Guid& component, supervisor::LogStream stream,
                           size_t lines) const;
  // The update agent's UpdateHooks::update_pending: tells the app (Supervisor::
  // NotifyUpdatePending, docs/supervisor.md "App services") that its update will be applied at
  // now + answer_timeout and returns the deferral it asked for; 0 for "ok", no answer within
  // `answer_timeout`, an app that is not running or lacks SystemEventNotifications.
  std::chrono::seconds AskUpdateDeferral(
      const formats::Guid& component, SystemTime now,
      std::chrono::milliseconds answer_timeout = kUpdateAnswerTimeout);
  static constexpr std::chrono::milliseconds kUpdateAnswerTimeout{10000};
  const InstanceClaim& instance() const { return instance_; }

 private:
  AppRunner(const Config& config, formats::Board board)
      : config_(config), layout_(config.state_dir), board_(std::move(board)) {}
  Result<supervisor::AppIds> IdsFor(const formats::Guid& component);
  Json Describe(const supervisor::AppInfo& info) const;  // called with mu_ held
  void RemoveLeftovers() const;

  const Config& config_;
  StateLayout layout_;
  formats::Board board_;
  InstanceClaim instance_;
  std::optional<sandbox::CgroupLayout> cgroups_;
  supervisor::DevicePolicy policy_;
  std::unique_ptr<supervisor::Supervisor> supervisor_;
  mutable std::mutex mu_;
  std::map<formats::Guid, supervisor::AppIds> ids_;        // guarded by mu_
  std::map<formats::Guid, std::string> running_versions_;  // guarded by mu_
  std::map<formats::Guid, std::string> names_;             // guarded by mu_
};

// The board's hardware definition from `path`, its imports read from the same directory.
Result<formats::Board> LoadBoardFile(const std::filesystem::path& path);

}  // namespace moat::device::agent
