// Resource limits set in the child before execve (soft = hard, so the app cannot raise them).
// Memory and process counts are cgroup limits (cgroups.h), not rlimits: RLIMIT_AS counts
// reservations rather than use, and RLIMIT_NPROC counts per uid across the whole machine.
#pragma once

#include <sys/resource.h>

#include <string_view>
#include <vector>

#include "device/sandbox/child_step.h"
#include "device/sandbox/sandbox_spec.h"

namespace moat::device::sandbox {

struct RlimitSetting {
  int resource;
  rlim_t value;
  std::string_view name;  // "RLIMIT_CORE", for error messages
};

// Launcher side. No core dumps (crash capture does not rely on them, and a core is a copy of the
// app's memory on disk), the spec's open-file limit, no locked memory except for real-time apps
// (which may lock up to their memory limit, capped by the launcher's own hard RLIMIT_MEMLOCK:
// raising it would need CAP_SYS_RESOURCE, which the device policy grants by raising moatd's own
// limit), no real-time scheduling priority. An open-file limit above the launcher's own hard limit
// makes the launch fail at this step.
std::vector<RlimitSetting> BuildRlimits(const SandboxSpec& spec);

// Child-side. Index on failure: the setting.
StepStatus ApplyRlimits(const std::vector<RlimitSetting>& settings);

}  // namespace moat::device::sandbox
