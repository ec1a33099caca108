// Install-time checks over the set of installed apps: peripheral ownership and uid/gid
// allocation. Both are pure functions over state the caller (the installer) loads and persists,
// so they can be tested exhaustively and an install is decided before anything is written.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <span>

#include "core/error.h"
#include "device/supervisor/spec_builder.h"
#include "formats/app_manifest.h"
#include "formats/guid.h"
#include "formats/hardware_definition.h"

namespace moat::device::supervisor {

// A peripheral belongs to at most one app. Returns an error if `candidate` asks for a peripheral
// that an app in `installed` already holds. Two requests clash when they resolve (on `board`) to
// the same AppManifestValue — whatever the capability or constant they were written with, so
// Uart "ISU0" and I2cMaster "$SAMPLE_I2C" (-> ISU0) clash — or, for anything but GPIO lines, to
// the same LinuxDevice node (the sandbox grants whole nodes). GPIO lines of one gpiochip share its
// node by design; see docs/supervisor.md for what that does and does not isolate.
//
// An installed app with the candidate's component ID is skipped: installing a new version of an
// app replaces it. Errors: kAlreadyExists naming both apps and the peripheral, e.g.
//   peripheral Gpio 8 ('$SAMPLE_LED') requested by app 'Blink' (1689d8b2-...) is already held
//   by app 'HelloWorld' (ae4714aa-...)
// and the errors of formats::ResolvePeripheralGrants for a manifest that does not resolve.
Result<void> CheckPeripheralOwnership(std::span<const formats::AppManifest> installed,
                                      const formats::AppManifest& candidate,
                                      const formats::Board& board);

// The range app uids/gids are allocated from. Must not contain 0 and should lie outside the
// host's system and user ranges (the default is above the usual 60000 cut-off of login.defs).
struct IdRange {
  uid_t first = 70000;
  uint32_t count = 10000;
};

// Returns the ids of `component`: those in `allocated` if it has any (an app keeps its ids across
// updates, so its storage stays its own), otherwise the lowest id in `range` that no entry of
// `allocated` uses as uid or gid, as both uid and gid. The caller persists the result.
// Errors: kInvalidArgument for a range containing 0 or wrapping around, kLimitExceeded when the
// range is used up.
Result<AppIds> AllocateAppIds(const std::map<formats::Guid, AppIds>& allocated,
                              const formats::Guid& component, const IdRange& range = {});

}  // namespace moat::device::supervisor
