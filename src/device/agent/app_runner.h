// Runs the installed apps: owns the supervisor (device/supervisor), turns an installed image into
// a SupervisedApp (manifest + the board's hardware definition + the device policy, through
// spec_builder), keeps each app's uid/gid across updates (<state>/app-ids.json), and restarts an
// app on the version the update agent just switched to.
//
// Sandboxing needs root (namespaces, cgroups, mounts, nftables): Create fails with
// kFailedPrecondition naming that when moatd is not root, and when no board is configured.
//
// Thread-safety: Run/Running/Status may be called from any thread (the supervisor is
// thread-safe; the id map has its own lock).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "core/json.h"
#include "device/agent/config.h"
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
  };
  static Result<std::unique_ptr<AppRunner>> Create(const Config& config, Callbacks callbacks);
  ~AppRunner();

  // Starts `app`'s current image, replacing whatever version of the component ran before.
  Result<void> Run(const update::InstalledApp& app);
  // Stops `component`'s app (waits until its sandbox is gone); no-op if it is not supervised.
  void Stop(const formats::Guid& component);
  std::vector<formats::Guid> Running() const;
  Json Status() const;
  // Stops every app (Supervisor::Shutdown).
  void Shutdown();

 private:
  AppRunner(const Config& config, formats::Board board)
      : config_(config), layout_(config.state_dir), board_(std::move(board)) {}
  Result<supervisor::AppIds> IdsFor(const formats::Guid& component);

  const Config& config_;
  StateLayout layout_;
  formats::Board board_;
  supervisor::DevicePolicy policy_;
  std::unique_ptr<supervisor::Supervisor> supervisor_;
  mutable std::mutex mu_;
  std::map<formats::Guid, supervisor::AppIds> ids_;        // guarded by mu_
  std::map<formats::Guid, std::string> running_versions_;  // guarded by mu_
};

// The board's hardware definition from `path`, its imports read from the same directory.
Result<formats::Board> LoadBoardFile(const std::filesystem::path& path);

}  // namespace moat::device::agent
