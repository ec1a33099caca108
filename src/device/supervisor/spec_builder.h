// The supervisor's policy: how an installed app, its manifest, the board and the device owner's
// policy become a SandboxSpec (device/sandbox/sandbox_spec.h), which the launcher then builds
// exactly.
//
// BuildSandboxSpec is pure (no I/O) and deny by default: the spec starts with nothing granted and
// each grant comes from one manifest field, the board or the device policy. A manifest field that
// asks for something this device cannot honour is an error naming the field, never a silently
// weaker (or silently missing) grant; docs/supervisor.md has the table of fields. Errors are
// kInvalidArgument (the manifest asks for something unsupported or malformed for this board) or
// kFailedPrecondition (the install or the device policy lacks what the manifest needs), and start
// with "app '<Name>' (<ComponentId>): ".
//
// Who decides what:
//   the app (manifest)      executable, arguments, which peripherals, storage size, network use,
//                           real-time class
//   the board               which device node stands for a peripheral (LinuxDevice)
//   the device owner        memory and process limits, the real-time CPU, caps on storage
//   (DevicePolicy)
//   the installer           where the image, storage and logs live; the app's uid/gid
//   (AppInstall)
// An app can never raise its own limits: nothing in a manifest reaches CgroupLimits.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "device/sandbox/network_policy.h"
#include "device/sandbox/sandbox_spec.h"
#include "formats/app_manifest.h"
#include "formats/guid.h"
#include "formats/hardware_definition.h"

namespace moat::device::supervisor {

// An app's own uid and gid (install_checks.h allocates them).
struct AppIds {
  uid_t uid = 0;
  gid_t gid = 0;

  bool operator==(const AppIds&) const = default;
};

// Where an installed app lives on the host. Paths are absolute.
struct AppInstall {
  std::string instance_id;              // the moatd instance (SandboxSpec::instance_id)
  std::filesystem::path root_image;     // the image's root directory (read-only in the app)
  std::filesystem::path storage_image;  // the storage image; empty: the install has none
  std::filesystem::path log_dir;        // stdout.log and stderr.log go here
  AppIds ids;                           // never 0
  // Host libraries a dynamically linked app needs (SandboxSpec::runtime_binds); empty for a
  // static app.
  std::vector<std::filesystem::path> runtime_binds;
};

// Limits the device owner sets for one app (by component ID); unset fields keep the default.
struct AppLimitOverride {
  std::optional<uint64_t> memory_bytes;
  std::optional<uint32_t> pids_max;
  std::optional<uint32_t> max_open_files;

  bool operator==(const AppLimitOverride&) const = default;
};

// The device owner's policy (never the app's). Defaults are the sandbox's documented per-app
// defaults (sandbox::CgroupLimits): 64 MiB of memory, 64 processes/threads, any CPU.
struct DevicePolicy {
  uint64_t memory_bytes = sandbox::CgroupLimits::kDefaultMemoryBytes;
  uint32_t pids_max = sandbox::CgroupLimits::kDefaultPidsMax;
  uint32_t max_open_files = 256;
  uint64_t tmp_size_bytes = 1 << 20;  // private /tmp, counted against the memory limit
  // The largest MutableStorage.SizeKB this device grants; a larger request is refused.
  uint32_t max_storage_kb = formats::kMaxMutableStorageKb;
  // The CPU reserved for RealTimeCapable apps. Unset: this device runs no real-time apps, and a
  // RealTimeCapable manifest is refused.
  std::optional<uint32_t> realtime_cpu;
  std::map<formats::Guid, AppLimitOverride> per_app;
};

// The smallest storage image the sandbox can make (sandbox/storage.h). A manifest's SizeKB below
// it gets an image of this size: the kernel-enforced quota is then the image, slightly more than
// asked (Azure Sphere's own samples ask for 8 KiB).
inline constexpr uint64_t kMinStorageImageKb = 64;

// The storage image size for a manifest's SizeKB (see kMinStorageImageKb).
uint64_t StorageImageKb(uint32_t manifest_size_kb);

// Builds the spec; see the file comment. The result has passed SandboxSpec::Validate().
Result<sandbox::SandboxSpec> BuildSandboxSpec(const AppInstall& install,
                                              const formats::AppManifest& manifest,
                                              const formats::Board& board,
                                              const DevicePolicy& policy);

// What the supervisor provides an app besides its sandbox (supervisor.h, docs/supervisor.md "App
// services"), from its manifest:
//   SystemEventNotifications       system_events: update-pending events on MOAT_EVENTS_FD
//   SoftwareUpdateDeferral         update_deferral: the app's "defer" answers are honoured
//   AllowedApplicationConnections  connections: the apps it may talk to (sorted, without
//                                  duplicates or itself); a channel exists only for a pair that
//                                  lists each other
//   DeviceAuthentication           device_authentication: the tenant whose device certificate
//                                  the app may use (device_auth.h); a placeholder or the nil
//                                  GUID asks for nothing
struct AppServices {
  bool system_events = false;
  bool update_deferral = false;
  std::vector<formats::Guid> connections;
  std::optional<formats::Guid> device_authentication;

  bool operator==(const AppServices&) const = default;
};
AppServices BuildAppServices(const formats::AppManifest& manifest);

// Resolves a host name from a manifest's AllowedConnections to its IPv4 addresses. moatd supplies
// it (its resolver, before each install or start); tests supply a table. An error or an empty
// result fails the policy: an app is never started with a destination silently missing.
using HostResolver =
    std::function<Result<std::vector<sandbox::Ipv4Address>>(std::string_view host_name)>;

// The app's network policy (device/sandbox/network_policy.h) from its manifest: nullopt when the
// manifest asks for no network (BuildSandboxSpec then gives it NetworkMode::kNone), else the
// policy its NetworkMode::kConfigured sandbox is launched with (SupervisedApp::network_policy).
//   AllowedConnections   IPv4 address -> that address, any port; host name -> every address
//                        `resolve` returns, any port; placeholders are skipped; wildcard host
//                        names, DNS-SD names and IPv6 addresses are refused (kInvalidArgument
//                        naming the entry: they cannot be enforced by this device yet)
//   AllowedTcpServerPorts, AllowedUdpServerPorts   the inbound ports, as listed
// `resolve` is called only for host names; an empty function with a host name listed is
// kFailedPrecondition. The addresses are fixed at launch (no re-resolution while the app runs).
// Errors start with "app '<Name>' (<ComponentId>): ".
Result<std::optional<sandbox::NetworkPolicy>> BuildNetworkPolicy(
    const formats::AppManifest& manifest, const HostResolver& resolve);

}  // namespace moat::device::supervisor
