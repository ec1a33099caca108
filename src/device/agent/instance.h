// One moatd instance's share of the host, so that several moatd run side by side (the demo and
// the fleet tests run a few on one machine) without touching each other's apps.
//
// Names. Every host-wide resource an app uses is named after the instance ID
// (config.supervisor.instance_id; by default "m" + 10 hex digits of the SHA-256 of the state
// directory's absolute path, so two configs that differ only in state_dir never share one):
//   cgroups      <moatd's cgroup>/moat-<instance>/<app>          (sandbox/cgroups.h)
//   nftables     table inet moat/<instance>/<app>                (sandbox/app_network.h)
//   interfaces   mt<hash of instance and app>, alias moat/<instance>/<app>
//   control socket and state: in the state directory (config)
//
// Numbers. Addresses and uids cannot be named, so each instance claims a slot 0..63 in a
// host-wide registry (<run_dir>, default /run/moat): a file slot-<n> naming its owner, created
// O_EXCL under an flock on <run_dir>/slots.lock. Slot n gives
//   app links    10.213.(4n).0/22  (256 /30 links)  — unless config.supervisor.network_pool
//   app uids     70000 + 1000 n .. +999 (uid = gid) for apps that have none yet
// The slot is remembered in <state_dir>/instance.json and claimed again at the next start; a
// slot stays reserved for its owner until the registry is cleared (a reboot clears /run). A new
// instance starts probing at a slot derived from its ID.
//
// Liveness. <run_dir>/instance-<instance>.lock is flock-ed for the life of the claim (the kernel
// drops it when moatd dies, kill -9 included), so a second moatd with the same instance ID is
// refused rather than allowed to kill the first one's apps by "cleaning up" its cgroups.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/unique_fd.h"
#include "device/agent/config.h"
#include "device/sandbox/network_policy.h"
#include "device/supervisor/install_checks.h"

namespace moat::device::agent {

inline constexpr uint32_t kInstanceSlots = 64;

// The default instance ID for a state directory ("m" + 10 lowercase hex digits).
std::string DefaultInstanceId(const std::filesystem::path& state_dir);

struct InstanceClaim {
  std::string instance_id;
  uint32_t slot = 0;
  sandbox::Ipv4Subnet network_pool;  // the app links' pool
  supervisor::IdRange ids;           // where new apps' uids/gids come from
  UniqueFd lock;                     // the instance lock, held while this object lives
};

// Claims the instance's lock and slot (see above). Errors: kAlreadyExists when a moatd with this
// instance ID is running (naming the lock file), kLimitExceeded when all slots are taken, kIo.
Result<InstanceClaim> ClaimInstance(const Config& config);

}  // namespace moat::device::agent
