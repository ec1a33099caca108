// A test hook for power-loss tests: CrashPoint("step") kills the process with SIGKILL when the
// environment variable MOAT_TEST_CRASH_AT names that step, so a test can stop an install at each
// step boundary exactly as a power cut or `kill -9` would, then restart and check what is left.
//
// It is honoured in every build (documented in docs/moatd.md, "Test hooks"): it can only kill the
// process, which anyone able to set moatd's environment can do anyway, and it never skips a
// check. The variable is read at every call.
#pragma once

#include <string_view>

namespace moat::device::update {

void CrashPoint(std::string_view step);

// Every step name the install, rollback and trusted-metadata code passes to CrashPoint, in the
// order an install reaches them (for tests that iterate over all of them).
inline constexpr std::string_view kInstallCrashPoints[] = {
    "install-unpacked",           // tree written into the staging directory, not yet synced
    "install-synced",             // staging files and directories fsync'ed
    "install-renamed",            // staging directory renamed to apps/<c>/<image-id>
    "install-previous-switched",  // `previous` now names the old current image
    "install-current-switched",   // `current` now names the new image
    "install-cleaned",            // images neither current nor previous removed
};
inline constexpr std::string_view kRollbackCrashPoints[] = {
    "rollback-current-switched",  // `current` names the previous image again
    "rollback-cleaned",           // `previous` removed and the bad image deleted
};
inline constexpr std::string_view kTrustedStoreCrashPoints[] = {
    "trusted-save-before",  // about to replace one role's trusted metadata
    "trusted-save-after",   // replaced
};

}  // namespace moat::device::update
