#include "device/sandbox/rlimits.h"

namespace moat::device::sandbox {

std::vector<RlimitSetting> BuildRlimits(const SandboxSpec& spec) {
  rlim_t memlock = 0;
  if (spec.seccomp_class == SeccompClass::kRealTime) {
    struct rlimit own {};
    memlock = spec.limits.memory_bytes;
    if (::getrlimit(RLIMIT_MEMLOCK, &own) == 0 && own.rlim_max < memlock) memlock = own.rlim_max;
  }
  return {
      {RLIMIT_CORE, 0, "RLIMIT_CORE"},
      {RLIMIT_NOFILE, spec.max_open_files, "RLIMIT_NOFILE"},
      {RLIMIT_MEMLOCK, memlock, "RLIMIT_MEMLOCK"},
      {RLIMIT_RTPRIO, 0, "RLIMIT_RTPRIO"},
      {RLIMIT_NICE, 0, "RLIMIT_NICE"},
  };
}

StepStatus ApplyRlimits(const std::vector<RlimitSetting>& settings) {
  for (size_t i = 0; i < settings.size(); ++i) {
    struct rlimit limit {
      settings[i].value, settings[i].value
    };
    if (::setrlimit(settings[i].resource, &limit) != 0) {
      return StepStatus::FromErrno(static_cast<uint32_t>(i));
    }
  }
  return {};
}

}  // namespace moat::device::sandbox
