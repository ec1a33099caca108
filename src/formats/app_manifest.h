// Azure Sphere application manifests (app_manifest.json), read strictly.
//
// Moat accepts Azure Sphere's own manifest format unchanged: every complete manifest in the public
// Azure Sphere sample and gallery repositories parses (see shared/compat). The reader is deny by
// default in the same way the runtime is: a field or capability it does not know is an error, not
// something to skip, because a skipped capability would silently grant or drop a permission.
//
// Everything here is pure (no I/O) and thread-compatible. Errors are kInvalidArgument, or
// kLimitExceeded when a size limit is hit, and their messages start with "app manifest: " and name
// the offending field by its JSON path, e.g.
//   app manifest: Capabilities.AllowedTcpServerPorts[1]: 70000 is out of range 1..65535
//
// Bounds Moat enforces (Azure Sphere documents few; these are generous for every real manifest):
//   SchemaVersion          exactly 1
//   ComponentId            a GUID, not the nil GUID
//   EntryPoint             an absolute, normalized path ("/bin/app"): no "", "." or ".." parts
//   MallocVersion          1 (musl's original malloc) or 2 (mallocng)
//   server ports           1..65535, no duplicates
//   MutableStorage.SizeKB  1..65536 (Azure Sphere's MT3620 allows at most 64; Moat targets
//                          larger Linux boards, and a device policy may set a lower quota)
//   Gpio numbers           0..65535; other peripherals are names like "ISU0" or
//                          "ADC-CONTROLLER-0"; any peripheral may be a "$NAME" constant
//   strings, lists         at most ManifestLimits::max_string_bytes / max_list_items; names and
//                          paths must not be empty or hold control characters
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "formats/guid.h"

namespace moat::formats {

enum class ApplicationType {
  kDefault,          // a high-level app, run in a sandbox by the device runtime
  kRealTimeCapable,  // an app for a real-time core: peripherals and app connections only
};

// "Default" or "RealTimeCapable".
std::string_view ApplicationTypeName(ApplicationType type);

// A peripheral as written in a manifest: a number (Gpio 8), a name ("ISU0", "ADC-CONTROLLER-0"),
// or a "$NAME" constant that a hardware definition resolves (see hardware_definition.h).
struct PeripheralRef {
  std::variant<int64_t, std::string> value;

  // True for "$NAME".
  bool IsConstant() const;
  // The constant's name without '$'; empty unless IsConstant().
  std::string_view ConstantName() const;
  // "8", "ISU0" or "$SAMPLE_LED".
  std::string ToString() const;

  bool operator==(const PeripheralRef&) const = default;
};

// The peripheral capabilities, which hold PeripheralRefs.
enum class PeripheralKind { kGpio, kUart, kI2cMaster, kSpiMaster, kPwm, kAdc };
inline constexpr PeripheralKind kAllPeripheralKinds[] = {
    PeripheralKind::kGpio,      PeripheralKind::kUart, PeripheralKind::kI2cMaster,
    PeripheralKind::kSpiMaster, PeripheralKind::kPwm,  PeripheralKind::kAdc};
// The capability's JSON name, which is also the peripheral Type in hardware definitions:
// "Gpio", "Uart", "I2cMaster", "SpiMaster", "Pwm", "Adc".
std::string_view PeripheralKindName(PeripheralKind kind);

inline constexpr int64_t kMaxGpioNumber = 65535;
inline constexpr size_t kMaxPeripheralNameBytes = 64;
inline constexpr size_t kMaxConstantNameBytes = 128;

// A peripheral name as an AppManifestValue or a manifest writes it: 1..64 of letters, digits,
// '_', '-' and '.', starting with a letter or digit ("ISU0", "ADC-CONTROLLER-0").
bool IsValidPeripheralName(std::string_view name);
// A hardware-definition constant (the NAME of "$NAME"): a C identifier of at most 128 bytes.
bool IsValidConstantName(std::string_view name);
// Checks that `ref` may appear in the `kind` list: a Gpio is a number 0..kMaxGpioNumber, any
// other peripheral a valid name; either may be a "$NAME" constant. The error message names only
// the value (callers prefix the path).
Result<void> CheckPeripheralRef(PeripheralKind kind, const PeripheralRef& ref);

inline constexpr uint32_t kMaxMutableStorageKb = 65536;

struct MutableStorage {
  uint32_t size_kb = 0;  // 1..kMaxMutableStorageKb

  bool operator==(const MutableStorage&) const = default;
};

// DeviceAuthentication as written. Unedited samples hold a placeholder such as
// "REPLACE_WITH_YOUR_AZURE_SPHERE_TENANT_ID" where the tenant GUID belongs; such a manifest is
// accepted (it must be, to read the samples unchanged) but grants no device authentication.
struct DeviceAuthentication {
  // The tenant whose CA must have issued the device certificate. The nil GUID means the device's
  // current tenant. Empty when the manifest holds a placeholder.
  std::optional<Guid> tenant;
  // The placeholder word as written (letters, digits and '_' only); empty when `tenant` is set.
  std::string placeholder;

  bool operator==(const DeviceAuthentication&) const = default;
};

// Power controls an app may use; only these three exist.
inline constexpr std::string_view kPowerControlForcePowerDown = "ForcePowerDown";
inline constexpr std::string_view kPowerControlForceReboot = "ForceReboot";
inline constexpr std::string_view kPowerControlSetPowerProfile = "SetPowerProfile";

// The capabilities of an app. Anything not listed is denied. Lists keep the manifest's order;
// none holds duplicates.
struct Capabilities {
  // Hosts the app may connect to, as written. Each is printable ASCII; see
  // ClassifyAllowedConnection() for which entries can ever match a peer.
  std::vector<std::string> allowed_connections;
  std::vector<uint16_t> allowed_tcp_server_ports;  // 1..65535
  std::vector<uint16_t> allowed_udp_server_ports;  // 1..65535
  // Component IDs of partner apps this app may talk to (inter-core or app-to-app).
  std::vector<Guid> allowed_application_connections;
  std::vector<PeripheralRef> gpio, uart, i2c_master, spi_master, pwm, adc;
  std::optional<DeviceAuthentication> device_authentication;
  std::optional<MutableStorage> mutable_storage;
  std::vector<std::string> power_controls;  // kPowerControl* values
  bool system_event_notifications = false;
  bool software_update_deferral = false;
  bool network_config = false;
  bool wifi_config = false;
  bool enterprise_wifi_config = false;
  bool cert_store = false;
  bool sntp_service = false;
  bool dhcp_service = false;
  bool time_sync_config = false;
  bool system_time = false;
  bool read_network_proxy_config = false;
  bool heap_mem_stats = false;

  bool operator==(const Capabilities&) const = default;
};

// The list of `kind` in `caps`.
std::vector<PeripheralRef>& PeripheralList(Capabilities& caps, PeripheralKind kind);
const std::vector<PeripheralRef>& PeripheralList(const Capabilities& caps, PeripheralKind kind);

struct AppManifest {
  int schema_version = 1;
  std::string name;
  Guid component_id;
  std::string entry_point;
  std::vector<std::string> cmd_args;
  ApplicationType application_type = ApplicationType::kDefault;
  std::optional<int> malloc_version;
  Capabilities capabilities;

  bool operator==(const AppManifest&) const = default;
};

struct ManifestLimits {
  size_t max_bytes = 64 * 1024;    // the whole document; the largest real manifest is ~1 KiB
  size_t max_list_items = 256;     // any one list (CmdArgs, AllowedConnections, Gpio, ...)
  size_t max_string_bytes = 1024;  // any one string (Name, EntryPoint, a host name, an argument)
};

// Parses and validates a whole manifest. Required: SchemaVersion, Name, ComponentId, EntryPoint,
// Capabilities; when several are missing the first in that order is named. Optional: CmdArgs,
// ApplicationType (absent means Default), MallocVersion. Unknown fields, unknown capabilities,
// duplicate keys and wrong JSON types are errors. A RealTimeCapable app may only use the
// peripheral capabilities and AllowedApplicationConnections; anything else it requests is an
// error, because no real-time core can be granted network, storage or system services.
Result<AppManifest> ParseAppManifest(std::string_view json, const ManifestLimits& limits = {});

// Parses a Capabilities object on its own (e.g. a capability snippet). `path` prefixes field
// names in messages ("Capabilities.Gpio[0]"); an unknown capability is named by its key alone
// ("app manifest: unknown capability 'Bluetooth'").
Result<Capabilities> ParseCapabilities(const Json& capabilities,
                                       std::string_view path = "Capabilities",
                                       const ManifestLimits& limits = {});

// Serialises with Azure Sphere's field names, so that for any manifest m this reader accepted,
// ParseAppManifest(DumpJson(ToJson(m))) == m. GUIDs are written in lowercase; capabilities that
// grant nothing (false, empty lists) are left out, while CmdArgs and ApplicationType are always
// written, so the output of a manifest read at exactly max_bytes may be a few bytes longer.
Json ToJson(const AppManifest& manifest);
Json ToJson(const Capabilities& capabilities);

// What an AllowedConnections entry denotes. The samples ship placeholders there
// ("<your_event_grid_mqtt_hostname>", "CHANGE THIS", ""); the reader keeps them so that the
// samples read unchanged, but they can never match a peer: a firewall must skip them (and tools
// may warn about them).
enum class ConnectionKind {
  kHostName,          // "example.com", "my-hub"
  kWildcardHostName,  // "*.example.com": hosts below example.com (two or more labels after *)
  kIpv4Address,       // "192.168.0.2" (dotted decimal, no leading zeros)
  kIpv6Address,       // "fe80::1"
  kDnsSdService,      // "_http._tcp.home": a DNS service discovery name
  kPlaceholder,       // anything else
};
ConnectionKind ClassifyAllowedConnection(std::string_view entry);

}  // namespace moat::formats
