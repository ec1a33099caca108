#include "device/sandbox/capabilities.h"

#include <linux/securebits.h>
#include <sys/prctl.h>

#include <cerrno>

namespace moat::device::sandbox {

Result<EmptyCapSet> MakeEmptyCapSet() {
  cap_t caps = cap_init();
  if (caps == nullptr) return Fail(ErrorCode::kInternal, "cap_init: out of memory");
  return EmptyCapSet(caps);
}

StepStatus DropBoundingAndAmbient(ChildStep& step) {
  // SECURITY: locked securebits: uid 0 would gain no capabilities on execve (NOROOT), capabilities
  // are not kept across the uid switch (KEEP_CAPS off, locked), and ambient capabilities can never
  // be raised again. NO_SETUID_FIXUP stays off so that leaving uid 0 clears the sets.
  step = ChildStep::kSecurebits;
  constexpr unsigned kBits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
                             SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
                             SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  if (cap_set_secbits(kBits) != 0) return StepStatus::FromErrno();
  step = ChildStep::kBoundingSet;
  // cap_max_bits() is what this kernel knows (libcap reads it at start-up), so newer
  // capabilities than libcap's headers know are dropped too.
  for (unsigned cap = 0; cap < static_cast<unsigned>(cap_max_bits()); ++cap) {
    if (cap_drop_bound(static_cast<cap_value_t>(cap)) != 0) return StepStatus::FromErrno(cap);
  }
  step = ChildStep::kAmbient;
  if (cap_reset_ambient() != 0) return StepStatus::FromErrno();
  return {};
}

StepStatus ClearProcessCapabilities(const EmptyCapSet& empty) {
  if (cap_set_proc(empty.get()) != 0) return StepStatus::FromErrno();
  return {};
}

}  // namespace moat::device::sandbox
