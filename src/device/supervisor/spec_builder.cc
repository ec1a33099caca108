// Manifest -> SandboxSpec. The function reads top to bottom as the decision table in
// docs/supervisor.md: identity, what runs, who runs it, the file system, peripherals, storage,
// network, class and limits; then the capabilities Moat cannot grant yet, each refused by name.
#include "device/supervisor/spec_builder.h"

#include <algorithm>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace moat::device::supervisor {
namespace {

using formats::AppManifest;
using formats::Capabilities;
using formats::PeripheralKind;
using sandbox::SandboxSpec;

// Every error names the app, so that a log line says which install failed.
class Errors {
 public:
  explicit Errors(const AppManifest& m)
      : prefix_(fmt::format("app '{}' ({})", m.name, m.component_id.ToString())) {}

  template <typename... Args>
  std::unexpected<Error> Invalid(fmt::format_string<Args...> format, Args&&... args) const {
    return Fail(ErrorCode::kInvalidArgument, "{}: {}", prefix_,
                fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  std::unexpected<Error> Precondition(fmt::format_string<Args...> format, Args&&... args) const {
    return Fail(ErrorCode::kFailedPrecondition, "{}: {}", prefix_,
                fmt::format(format, std::forward<Args>(args)...));
  }
  Error Wrap(const Error& e) const { return e.WithContext(prefix_); }

 private:
  std::string prefix_;
};

// Capabilities that ask the device runtime for a service Moat does not offer apps yet. Granting
// the rest of the sandbox without them would leave the app running but broken in a way nobody
// asked for, so each is refused with its name; the reason says what is missing.
struct UnsupportedFlag {
  std::string_view field;
  bool Capabilities::*member;
  std::string_view reason;
};
constexpr UnsupportedFlag kUnsupportedFlags[] = {
    {"NetworkConfig", &Capabilities::network_config, "apps cannot configure the network"},
    {"WifiConfig", &Capabilities::wifi_config, "apps cannot configure Wi-Fi"},
    {"EnterpriseWifiConfig", &Capabilities::enterprise_wifi_config, "apps cannot configure Wi-Fi"},
    {"CertStore", &Capabilities::cert_store, "no certificate store service for apps yet"},
    {"SntpService", &Capabilities::sntp_service, "apps cannot run an SNTP server"},
    {"DhcpService", &Capabilities::dhcp_service, "apps cannot run a DHCP server"},
    {"TimeSyncConfig", &Capabilities::time_sync_config, "apps cannot configure time sync"},
    // SECURITY: setting the clock needs CAP_SYS_TIME, which no app ever holds.
    {"SystemTime", &Capabilities::system_time, "apps cannot set the system time"},
    {"ReadNetworkProxyConfig", &Capabilities::read_network_proxy_config,
     "no proxy configuration service for apps yet"},
    {"HeapMemStats", &Capabilities::heap_mem_stats, "no heap statistics service for apps yet"},
};

bool AsksForNetwork(const Capabilities& c) {
  // Placeholder entries ("<your_hostname>", "CHANGE THIS") can never match a peer
  // (formats::ClassifyAllowedConnection), so a list of only placeholders asks for nothing.
  bool any_host = std::any_of(
      c.allowed_connections.begin(), c.allowed_connections.end(), [](const std::string& entry) {
        return formats::ClassifyAllowedConnection(entry) != formats::ConnectionKind::kPlaceholder;
      });
  return any_host || !c.allowed_tcp_server_ports.empty() || !c.allowed_udp_server_ports.empty();
}

// Index of `grant` within its capability's list, for messages ("Capabilities.Gpio[1]").
std::string GrantField(const AppManifest& m, const formats::PeripheralGrant& grant) {
  const auto& list = formats::PeripheralList(m.capabilities, grant.kind);
  auto it = std::find(list.begin(), list.end(), grant.written);
  return fmt::format("Capabilities.{}[{}]", formats::PeripheralKindName(grant.kind),
                     it - list.begin());
}

}  // namespace

uint64_t StorageImageKb(uint32_t manifest_size_kb) {
  return std::max<uint64_t>(manifest_size_kb, kMinStorageImageKb);
}

Result<SandboxSpec> BuildSandboxSpec(const AppInstall& install, const AppManifest& manifest,
                                     const formats::Board& board, const DevicePolicy& policy) {
  const Errors err(manifest);
  const Capabilities& caps = manifest.capabilities;
  if (manifest.component_id.IsNil()) return err.Invalid("ComponentId: the nil GUID");

  SandboxSpec spec;

  // Identity: the component ID names the sandbox (cgroups, hostname). It is unique per device and
  // already a valid sandbox name, which a manifest's free-form Name is not.
  spec.instance_id = install.instance_id;
  spec.app_name = manifest.component_id.ToString();

  // What runs. The environment is complete: nothing of moatd's leaks in.
  spec.executable = manifest.entry_point;
  spec.args = manifest.cmd_args;
  spec.env = {
      "PATH=/usr/local/bin:/usr/bin:/bin",
      "TMPDIR=/tmp",
      fmt::format("HOME={}", caps.mutable_storage ? sandbox::kStorageMountPoint : "/tmp"),
      fmt::format("MOAT_COMPONENT_ID={}", manifest.component_id.ToString()),
  };

  // Who runs it: ids the installer allocated, never root (Validate refuses 0).
  spec.uid = install.ids.uid;
  spec.gid = install.ids.gid;

  // The file system: the image read-only, host libraries only if the installer says the app
  // needs them, logs where the installer put them.
  spec.root_image = install.root_image;
  spec.runtime_binds = install.runtime_binds;
  spec.tmp_size_bytes = policy.tmp_size_bytes;
  if (!install.log_dir.empty()) {
    spec.stdout_path = install.log_dir / "stdout.log";
    spec.stderr_path = install.log_dir / "stderr.log";
  }

  // Peripherals: each through the board to its device node. A peripheral the board cannot back
  // with a device node cannot be granted, and is an error rather than a missing device.
  auto grants = formats::ResolvePeripheralGrants(manifest, board);
  if (!grants) return Fail(err.Wrap(grants.error()));
  for (const formats::PeripheralGrant& grant : *grants) {
    if (!grant.linux_device) {
      return err.Invalid("{}: '{}'{} has no LinuxDevice on board '{}', so it cannot be granted",
                         GrantField(manifest, grant), grant.written.ToString(),
                         grant.chain.empty() ? std::string() : fmt::format(" ({})", grant.chain),
                         board.root_name());
    }
    std::filesystem::path device(*grant.linux_device);
    // Several GPIO lines usually share one gpiochip node: bind it once.
    if (std::find(spec.devices.begin(), spec.devices.end(), device) == spec.devices.end()) {
      spec.devices.push_back(std::move(device));
    }
  }

  // Storage: the quota is the image's size, which the kernel enforces.
  if (caps.mutable_storage) {
    uint32_t size_kb = caps.mutable_storage->size_kb;
    if (size_kb > policy.max_storage_kb) {
      return err.Invalid(
          "Capabilities.MutableStorage.SizeKB: {} is more than this device grants an app ({})",
          size_kb, policy.max_storage_kb);
    }
    if (install.storage_image.empty()) {
      return err.Precondition(
          "Capabilities.MutableStorage: the install has no storage image for it");
    }
    spec.storage = sandbox::MutableStorage{install.storage_image, StorageImageKb(size_kb)};
  }

  // Network: a private namespace with only lo unless the manifest asks for peers or server
  // ports; then the launch's network hook must set up exactly those (the launcher refuses a
  // configured network without a hook, so this can never silently open everything).
  spec.network =
      AsksForNetwork(caps) ? sandbox::NetworkMode::kConfigured : sandbox::NetworkMode::kNone;

  // Capabilities Moat cannot honour yet. (DeviceAuthentication is a service, not a sandbox
  // grant: BuildAppServices.)
  if (!caps.power_controls.empty()) {
    return err.Invalid("Capabilities.PowerControls: apps cannot control power on this device");
  }
  for (const UnsupportedFlag& flag : kUnsupportedFlags) {
    if (caps.*flag.member) return err.Invalid("Capabilities.{}: {}", flag.field, flag.reason);
  }

  // Limits: the device owner's, never the app's.
  spec.limits.memory_bytes = policy.memory_bytes;
  spec.limits.pids_max = policy.pids_max;
  spec.max_open_files = policy.max_open_files;
  if (auto it = policy.per_app.find(manifest.component_id); it != policy.per_app.end()) {
    const AppLimitOverride& o = it->second;
    if (o.memory_bytes) spec.limits.memory_bytes = *o.memory_bytes;
    if (o.pids_max) spec.limits.pids_max = *o.pids_max;
    if (o.max_open_files) spec.max_open_files = *o.max_open_files;
  }

  // Class. A real-time app gets the stricter seccomp class (threads only, AF_UNIX only, may
  // mlock up to its memory limit), no network and the CPU the device reserves for real time.
  if (manifest.application_type == formats::ApplicationType::kRealTimeCapable) {
    if (spec.network != sandbox::NetworkMode::kNone || spec.storage) {
      // The manifest reader already refuses these for real-time apps; a manifest built in code
      // must not get past here either.
      return err.Invalid("ApplicationType: a RealTimeCapable app cannot have network or storage");
    }
    if (!policy.realtime_cpu) {
      return err.Precondition(
          "ApplicationType: RealTimeCapable, but the device policy reserves no CPU for "
          "real-time apps");
    }
    spec.seccomp_class = sandbox::SeccompClass::kRealTime;
    spec.limits.cpu = policy.realtime_cpu;
  }

  if (auto valid = spec.Validate(); !valid) return Fail(err.Wrap(valid.error()));
  return spec;
}

AppServices BuildAppServices(const AppManifest& manifest) {
  const Capabilities& caps = manifest.capabilities;
  AppServices services;
  services.system_events = caps.system_event_notifications;
  services.update_deferral = caps.software_update_deferral;
  services.connections = caps.allowed_application_connections;
  std::sort(services.connections.begin(), services.connections.end());
  services.connections.erase(std::unique(services.connections.begin(), services.connections.end()),
                             services.connections.end());
  std::erase(services.connections, manifest.component_id);
  // SECURITY: the app must name the tenant. The nil GUID (Azure Sphere's "the current tenant")
  // and placeholders grant nothing: a device is never lent to whichever tenant holds it now.
  if (caps.device_authentication && caps.device_authentication->tenant &&
      !caps.device_authentication->tenant->IsNil()) {
    services.device_authentication = caps.device_authentication->tenant;
  }
  return services;
}

Result<std::optional<sandbox::NetworkPolicy>> BuildNetworkPolicy(const AppManifest& manifest,
                                                                 const HostResolver& resolve) {
  const Errors err(manifest);
  const Capabilities& caps = manifest.capabilities;
  if (!AsksForNetwork(caps)) return std::nullopt;

  sandbox::NetworkPolicy policy;
  auto add = [&policy](sandbox::Ipv4Address address) {
    sandbox::NetworkDestination d{address, std::nullopt};
    if (std::find(policy.outbound.begin(), policy.outbound.end(), d) == policy.outbound.end()) {
      policy.outbound.push_back(d);
    }
  };
  for (size_t i = 0; i < caps.allowed_connections.size(); ++i) {
    const std::string& entry = caps.allowed_connections[i];
    switch (formats::ClassifyAllowedConnection(entry)) {
      case formats::ConnectionKind::kPlaceholder:
        continue;  // can never match a peer: grants nothing
      case formats::ConnectionKind::kIpv4Address: {
        MOAT_ASSIGN_OR_RETURN(sandbox::Ipv4Address address, sandbox::Ipv4Address::Parse(entry));
        if (!sandbox::IsUnicastDestination(address)) {
          // The app's link is routed, point to point: a broadcast or multicast never leaves it.
          return err.Invalid(
              "Capabilities.AllowedConnections[{}]: '{}': broadcast, multicast and loopback "
              "destinations are not supported",
              i, entry);
        }
        add(address);
        continue;
      }
      case formats::ConnectionKind::kHostName: {
        if (!resolve) {
          return err.Precondition(
              "Capabilities.AllowedConnections[{}]: '{}' is a host name and no resolver was given",
              i, entry);
        }
        auto addresses = resolve(entry);
        if (!addresses) {
          return Fail(addresses.error().WithContext(
              fmt::format("app '{}' ({}): Capabilities.AllowedConnections[{}]: resolving '{}'",
                          manifest.name, manifest.component_id.ToString(), i, entry)));
        }
        if (addresses->empty()) {
          return Fail(ErrorCode::kUnavailable,
                      "app '{}' ({}): Capabilities.AllowedConnections[{}]: '{}' resolves to no "
                      "IPv4 address",
                      manifest.name, manifest.component_id.ToString(), i, entry);
        }
        for (sandbox::Ipv4Address a : *addresses) add(a);
        continue;
      }
      // SECURITY: each of these would need the firewall to follow DNS answers (or to speak
      // mDNS) to be enforced; granting "any address" instead would open everything.
      case formats::ConnectionKind::kWildcardHostName:
        return err.Invalid(
            "Capabilities.AllowedConnections[{}]: '{}': wildcard host names are not supported "
            "yet",
            i, entry);
      case formats::ConnectionKind::kDnsSdService:
        return err.Invalid(
            "Capabilities.AllowedConnections[{}]: '{}': DNS-SD service names are not supported "
            "yet",
            i, entry);
      case formats::ConnectionKind::kIpv6Address:
        return err.Invalid(
            "Capabilities.AllowedConnections[{}]: '{}': IPv6 destinations are not supported yet "
            "(the app's link is IPv4 only)",
            i, entry);
    }
  }
  policy.tcp_server_ports = caps.allowed_tcp_server_ports;
  policy.udp_server_ports = caps.allowed_udp_server_ports;
  if (auto valid = policy.Validate(); !valid) return Fail(err.Wrap(valid.error()));
  return policy;
}

}  // namespace moat::device::supervisor
