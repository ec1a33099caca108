// Cgroups: per-app memory, process-count and CPU limits, on cgroup v1, v2 or a mix.
//
// The layout is detected at runtime, per controller: a controller mounted as its own v1 hierarchy
// is used there (hybrid systems, like this project's CI: memory and pids on v1, an empty
// cgroup2 at /sys/fs/cgroup/unified); otherwise it must be available in the unified v2 hierarchy.
// A controller that is in neither fails the launch: a sandbox without its limits is never
// started.
//
// Groups live below the launcher's own group in each hierarchy (so the apps stay inside whatever
// limits the service manager gave moatd), one subtree per moatd instance:
//   <hierarchy>/<moatd's group>/moat-<instance>/<app>
// so several moatd instances on one machine never collide. Creating an app's group first removes
// a leftover of the same name (a crashed run), killing any process still in it; removing the app's
// group also removes the instance group once it is empty. RemoveInstanceCgroups() clears a whole
// instance at moatd start.
//
// On v2 the launcher's group must be able to delegate: moatd must run in a group whose
// processes live in a leaf (e.g. systemd Delegate=yes, with moatd in a sub-group), or the write
// to cgroup.subtree_control fails with EBUSY and the launch fails saying so.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "device/sandbox/sandbox_spec.h"

namespace moat::device::sandbox {

enum class CgroupVersion { kV1, kV2 };

// Where one controller lives for the caller.
struct CgroupController {
  CgroupVersion version = CgroupVersion::kV2;
  std::filesystem::path mount;      // the hierarchy's mount point, e.g. /sys/fs/cgroup/memory
  std::filesystem::path own_group;  // the caller's group relative to `mount` ("" at the root)

  std::filesystem::path Base() const { return own_group.empty() ? mount : mount / own_group; }
  bool operator==(const CgroupController&) const = default;
};

struct CgroupLayout {
  CgroupController memory;
  CgroupController pids;
  std::optional<CgroupController> cpuset;  // only needed to pin a CPU

  std::string Describe() const;
};

// Pure. Resolves the layout from the texts of /proc/self/mountinfo and /proc/self/cgroup, and
// the caller's v2 group's cgroup.controllers ("" if there is no v2 hierarchy).
Result<CgroupLayout> ResolveCgroupLayout(std::string_view mountinfo,
                                         std::string_view proc_self_cgroup,
                                         std::string_view v2_controllers);

// Reads those files for the calling process and resolves the layout.
Result<CgroupLayout> DetectCgroupLayout();

// An app's cgroup(s): one directory per distinct hierarchy. Move-only. The destructor removes
// the groups if Remove() has not (best effort; a leftover is cleaned at the next Create).
class AppCgroup {
 public:
  // Creates the groups for `app` of moatd instance `instance` with `limits`, replacing leftovers.
  // Errors name the cgroup file and the value written.
  static Result<AppCgroup> Create(const CgroupLayout& layout, std::string_view instance,
                                  std::string_view app, const CgroupLimits& limits);

  AppCgroup(AppCgroup&& other) noexcept : groups_(std::exchange(other.groups_, {})) {}
  AppCgroup& operator=(AppCgroup&& other) noexcept;
  AppCgroup(const AppCgroup&) = delete;
  AppCgroup& operator=(const AppCgroup&) = delete;
  ~AppCgroup();

  // Moves process `pid` (as seen from the caller's PID namespace) into every group.
  Result<void> AddProcess(pid_t pid) const;

  // Removes the groups (they must be empty of processes: kill and reap first), then the instance
  // groups if nothing else is in them. Idempotent.
  Result<void> Remove();

  // The app's group directories, e.g. {/sys/fs/cgroup/memory/.../moat-i/app, .../pids/...}.
  std::vector<std::filesystem::path> Directories() const;

 private:
  struct Group {
    CgroupVersion version;
    std::filesystem::path instance_dir;
    std::filesystem::path app_dir;
  };
  explicit AppCgroup(std::vector<Group> groups) : groups_(std::move(groups)) {}
  std::vector<Group> groups_;
};

// Kills every process in, and removes, the cgroups of moatd instance `instance` (for a moatd
// that starts after a crash, and for tests).
Result<void> RemoveInstanceCgroups(const CgroupLayout& layout, std::string_view instance);

}  // namespace moat::device::sandbox
