#include "formats/app_manifest.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <utility>

#include "formats/json_reader.h"

namespace moat::formats {
namespace {

constexpr std::string_view kWhat = "app manifest";

// Field names in schema order: the order in which missing fields are reported and fields parsed.
constexpr std::string_view kSchemaVersion = "SchemaVersion";
constexpr std::string_view kName = "Name";
constexpr std::string_view kComponentId = "ComponentId";
constexpr std::string_view kEntryPoint = "EntryPoint";
constexpr std::string_view kCmdArgs = "CmdArgs";
constexpr std::string_view kApplicationType = "ApplicationType";
constexpr std::string_view kMallocVersion = "MallocVersion";
constexpr std::string_view kCapabilities = "Capabilities";

constexpr std::array<std::string_view, 8> kTopLevelFields = {
    kSchemaVersion,   kName,          kComponentId, kEntryPoint, kCmdArgs,
    kApplicationType, kMallocVersion, kCapabilities};
constexpr std::array<std::string_view, 5> kRequiredFields = {kSchemaVersion, kName, kComponentId,
                                                             kEntryPoint, kCapabilities};

constexpr std::string_view kAllowedConnections = "AllowedConnections";
constexpr std::string_view kAllowedTcpServerPorts = "AllowedTcpServerPorts";
constexpr std::string_view kAllowedUdpServerPorts = "AllowedUdpServerPorts";
constexpr std::string_view kAllowedApplicationConnections = "AllowedApplicationConnections";
constexpr std::string_view kDeviceAuthentication = "DeviceAuthentication";
constexpr std::string_view kMutableStorage = "MutableStorage";
constexpr std::string_view kSizeKb = "SizeKB";
constexpr std::string_view kPowerControls = "PowerControls";

// The boolean capabilities, in schema order.
struct BoolCapability {
  std::string_view name;
  bool Capabilities::*member;
};
constexpr std::array<BoolCapability, 12> kBoolCapabilities = {{
    {"SystemEventNotifications", &Capabilities::system_event_notifications},
    {"SoftwareUpdateDeferral", &Capabilities::software_update_deferral},
    {"NetworkConfig", &Capabilities::network_config},
    {"WifiConfig", &Capabilities::wifi_config},
    {"EnterpriseWifiConfig", &Capabilities::enterprise_wifi_config},
    {"CertStore", &Capabilities::cert_store},
    {"SntpService", &Capabilities::sntp_service},
    {"DhcpService", &Capabilities::dhcp_service},
    {"TimeSyncConfig", &Capabilities::time_sync_config},
    {"SystemTime", &Capabilities::system_time},
    {"ReadNetworkProxyConfig", &Capabilities::read_network_proxy_config},
    {"HeapMemStats", &Capabilities::heap_mem_stats},
}};

constexpr std::array<std::string_view, 3> kKnownPowerControls = {
    kPowerControlForcePowerDown, kPowerControlForceReboot, kPowerControlSetPowerProfile};

bool IsKnownCapability(std::string_view name) {
  for (std::string_view known :
       {kAllowedConnections, kAllowedTcpServerPorts, kAllowedUdpServerPorts,
        kAllowedApplicationConnections, kDeviceAuthentication, kMutableStorage, kPowerControls}) {
    if (name == known) return true;
  }
  for (PeripheralKind kind : kAllPeripheralKinds) {
    if (name == PeripheralKindName(kind)) return true;
  }
  for (const BoolCapability& b : kBoolCapabilities) {
    if (name == b.name) return true;
  }
  return false;
}

// Every message reads "app manifest: <path>: <detail>", or "app manifest: <detail>" at the top.
constexpr DocumentReader kManifest(kWhat);

bool IsPrintableAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
  });
}

bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAsciiAlnum(char c) { return IsAsciiAlpha(c) || IsAsciiDigit(c); }
bool IsHexDigit(char c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// 8 or 'ISU0'.
std::string Describe(const PeripheralRef& ref) {
  if (std::holds_alternative<int64_t>(ref.value)) return ref.ToString();
  return QuoteForMessage(ref.ToString());
}

Result<std::string> GetString(const Json& value, std::string_view path,
                              const ManifestLimits& limits) {
  return kManifest.ReadString(value, path, limits.max_string_bytes);
}

// A string that names something: not empty, no control characters.
Result<std::string> GetName(const Json& value, std::string_view path,
                            const ManifestLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(std::string s, GetString(value, path, limits));
  if (s.empty()) return kManifest.Invalid(path, "must not be empty");
  if (HasControlCharacter(s)) return kManifest.Invalid(path, "contains a control character");
  return s;
}

Result<Guid> GetGuid(const Json& value, std::string_view path, const ManifestLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(std::string s, GetString(value, path, limits));
  auto guid = Guid::Parse(s);
  if (!guid) return Fail(guid.error().WithContext(kManifest.Context(path)));
  return *guid;
}

// A component ID names one app; the nil GUID names none.
Result<Guid> GetComponentId(const Json& value, std::string_view path,
                            const ManifestLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(Guid guid, GetGuid(value, path, limits));
  if (guid.IsNil()) return kManifest.Invalid(path, "the nil GUID is not a component ID");
  return guid;
}

// EntryPoint is a path inside the app's image: absolute and normalized, so that it cannot name
// anything outside the image once the runtime joins it to the image root.
Result<std::string> GetEntryPoint(const Json& value, std::string_view path,
                                  const ManifestLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(std::string s, GetName(value, path, limits));
  if (s.front() != '/') {
    return kManifest.Invalid(path, "{} is not an absolute path", QuoteForMessage(s));
  }
  if (s == "/") return kManifest.Invalid(path, "'/' does not name a file");
  // SECURITY: every component must be a plain name, so ".." cannot climb out of the image.
  size_t start = 1;
  while (start <= s.size()) {
    size_t end = s.find('/', start);
    if (end == std::string::npos) end = s.size();
    std::string_view part = std::string_view(s).substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return kManifest.Invalid(path, "{} is not a normalized path (empty, '.' or '..' component)",
                               QuoteForMessage(s));
    }
    start = end + 1;
  }
  return s;
}

// A placeholder where a tenant GUID belongs: one word of letters, digits and '_' that is not
// made of hexadecimal digits only (those are malformed GUIDs, and must be reported as such).
bool IsPlaceholderWord(std::string_view s) {
  if (s.empty() || s.size() > kMaxConstantNameBytes) return false;
  bool non_hex = false;
  for (char c : s) {
    if (!IsAsciiAlnum(c) && c != '_') return false;
    if (!IsHexDigit(c)) non_hex = true;
  }
  return non_hex;
}

Result<DeviceAuthentication> GetDeviceAuthentication(const Json& value, std::string_view path,
                                                     const ManifestLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(std::string s, GetString(value, path, limits));
  DeviceAuthentication auth;
  if (IsPlaceholderWord(s)) {
    auth.placeholder = s;
    return auth;
  }
  auto guid = Guid::Parse(s);
  if (!guid) return Fail(guid.error().WithContext(kManifest.Context(path)));
  auth.tenant = *guid;
  return auth;
}

// Reads an array of at most max_list_items items, each with `read_item(item, item_path)`.
// With `describe`, an item equal to an earlier one is refused as "<item path>: <describe(item)>
// is listed twice"; without it, repeats are kept.
template <typename T>
Result<std::vector<T>> GetList(
    const Json& value, std::string_view path, const ManifestLimits& limits,
    const std::function<Result<T>(const Json& item, std::string_view item_path)>& read_item,
    const std::function<std::string(const T& item)>& describe = nullptr) {
  MOAT_ASSIGN_OR_RETURN(const Json::array_t* items,
                        kManifest.ReadArray(value, path, limits.max_list_items));
  std::vector<T> out;
  for (size_t i = 0; i < items->size(); ++i) {
    std::string item_path = JsonPathIndex(path, i);
    MOAT_ASSIGN_OR_RETURN(T item, read_item((*items)[i], item_path));
    if (describe && std::find(out.begin(), out.end(), item) != out.end()) {
      return kManifest.Invalid(item_path, "{} is listed twice", describe(item));
    }
    out.push_back(std::move(item));
  }
  return out;
}

Result<std::vector<std::string>> GetAllowedConnections(const Json& value, std::string_view path,
                                                       const ManifestLimits& limits) {
  auto read = [&](const Json& item, std::string_view item_path) -> Result<std::string> {
    // Empty strings and placeholders are accepted: the samples ship them (see the header).
    MOAT_ASSIGN_OR_RETURN(std::string s, GetString(item, item_path, limits));
    if (!IsPrintableAscii(s)) {
      return kManifest.Invalid(item_path,
                               "{} is not printable ASCII (write international names as xn--)",
                               QuoteForMessage(s));
    }
    return s;
  };
  return GetList<std::string>(value, path, limits, read, QuoteForMessage);
}

Result<std::vector<uint16_t>> GetPorts(const Json& value, std::string_view path,
                                       const ManifestLimits& limits) {
  auto read = [](const Json& item, std::string_view item_path) -> Result<uint16_t> {
    MOAT_ASSIGN_OR_RETURN(int64_t port, kManifest.ReadInt(item, item_path, 1, 65535));
    return static_cast<uint16_t>(port);
  };
  auto describe = [](const uint16_t& port) { return std::to_string(port); };
  return GetList<uint16_t>(value, path, limits, read, describe);
}

Result<std::vector<Guid>> GetApplicationConnections(const Json& value, std::string_view path,
                                                    const ManifestLimits& limits) {
  auto read = [&](const Json& item, std::string_view item_path) {
    return GetComponentId(item, item_path, limits);
  };
  auto describe = [](const Guid& guid) { return fmt::format("'{}'", guid.ToString()); };
  return GetList<Guid>(value, path, limits, read, describe);
}

Result<std::vector<PeripheralRef>> GetPeripherals(PeripheralKind kind, const Json& value,
                                                  std::string_view path,
                                                  const ManifestLimits& limits) {
  auto read = [&](const Json& item, std::string_view item_path) -> Result<PeripheralRef> {
    PeripheralRef ref;
    if (kind == PeripheralKind::kGpio && item.is_number_integer()) {
      MOAT_ASSIGN_OR_RETURN(ref.value, kManifest.ReadInt(item, item_path, 0, kMaxGpioNumber));
    } else if (item.is_string()) {
      MOAT_ASSIGN_OR_RETURN(ref.value, GetString(item, item_path, limits));
    } else {
      return kManifest.WrongType(
          item_path, kind == PeripheralKind::kGpio ? "an integer or a string" : "a string", item);
    }
    auto checked = CheckPeripheralRef(kind, ref);
    if (!checked) return Fail(checked.error().WithContext(kManifest.Context(item_path)));
    return ref;
  };
  return GetList<PeripheralRef>(value, path, limits, read, Describe);
}

Result<MutableStorage> GetMutableStorage(const Json& value, std::string_view path) {
  if (!value.is_object()) return kManifest.WrongType(path, "an object", value);
  // Unlike KnownFields, this message has never quoted the key; kept as it is.
  for (const auto& [key, unused] : value.items()) {
    if (key != kSizeKb) return kManifest.Invalid(path, "unknown field '{}'", key);
  }
  const Json* size = FindMember(value, kSizeKb);
  if (size == nullptr) return kManifest.Invalid(path, "missing required field '{}'", kSizeKb);
  MOAT_ASSIGN_OR_RETURN(
      int64_t kb, kManifest.ReadInt(*size, JsonPathJoin(path, kSizeKb), 1, kMaxMutableStorageKb));
  return MutableStorage{.size_kb = static_cast<uint32_t>(kb)};
}

Result<std::vector<std::string>> GetPowerControls(const Json& value, std::string_view path,
                                                  const ManifestLimits& limits) {
  auto read = [&](const Json& item, std::string_view item_path) -> Result<std::string> {
    MOAT_ASSIGN_OR_RETURN(std::string s, GetString(item, item_path, limits));
    if (std::find(kKnownPowerControls.begin(), kKnownPowerControls.end(), s) ==
        kKnownPowerControls.end()) {
      return kManifest.Invalid(item_path, "unknown power control {} (expected {}, {} or {})",
                               QuoteForMessage(s), kPowerControlForcePowerDown,
                               kPowerControlForceReboot, kPowerControlSetPowerProfile);
    }
    return s;
  };
  return GetList<std::string>(value, path, limits, read, QuoteForMessage);
}

Result<ApplicationType> GetApplicationType(const Json& value, std::string_view path,
                                           const ManifestLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(std::string s, GetString(value, path, limits));
  for (ApplicationType t : {ApplicationType::kDefault, ApplicationType::kRealTimeCapable}) {
    if (s == ApplicationTypeName(t)) return t;
  }
  return kManifest.Invalid(path, "{} is not one of Default, RealTimeCapable", QuoteForMessage(s));
}

// Real-time cores get peripherals and partner connections only: the real-time samples use
// nothing else, and Azure Sphere documents nothing else for them.
Result<void> CheckRealTimeCapabilities(const Capabilities& c, std::string_view path) {
  auto deny = [&](std::string_view name) {
    return kManifest.Invalid(JsonPathJoin(path, name),
                             "not available to RealTimeCapable applications");
  };
  if (!c.allowed_connections.empty()) return deny(kAllowedConnections);
  if (!c.allowed_tcp_server_ports.empty()) return deny(kAllowedTcpServerPorts);
  if (!c.allowed_udp_server_ports.empty()) return deny(kAllowedUdpServerPorts);
  if (c.device_authentication) return deny(kDeviceAuthentication);
  if (c.mutable_storage) return deny(kMutableStorage);
  if (!c.power_controls.empty()) return deny(kPowerControls);
  for (const BoolCapability& b : kBoolCapabilities) {
    if (c.*b.member) return deny(b.name);
  }
  return Ok();
}

bool IsIpv4Address(std::string_view s) {
  int parts = 0;
  size_t start = 0;
  while (true) {
    size_t end = s.find('.', start);
    std::string_view part = s.substr(start, end == std::string_view::npos ? s.npos : end - start);
    if (part.empty() || part.size() > 3 || !std::all_of(part.begin(), part.end(), IsAsciiDigit)) {
      return false;
    }
    if (part.size() > 1 && part[0] == '0') return false;  // no octal-looking leading zeros
    int v = 0;
    for (char c : part) v = v * 10 + (c - '0');
    if (v > 255) return false;
    ++parts;
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return parts == 4;
}

bool IsIpv6Address(std::string_view s) {
  if (s.size() > 45 || s.find(':') == std::string_view::npos) return false;
  std::string copy(s);  // inet_pton needs a NUL-terminated string
  in6_addr addr{};
  return inet_pton(AF_INET6, copy.c_str(), &addr) == 1;
}

bool IsHostLabel(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  return std::all_of(label.begin(), label.end(),
                     [](char c) { return IsAsciiAlnum(c) || c == '-'; });
}

// Host name labels; the last one (the top-level domain) is not all digits (RFC 3696 2).
bool IsHostName(const std::vector<std::string_view>& labels) {
  if (labels.empty()) return false;
  if (!std::all_of(labels.begin(), labels.end(), IsHostLabel)) return false;
  std::string_view tld = labels.back();
  return !std::all_of(tld.begin(), tld.end(), IsAsciiDigit);
}

// "_service" as in RFC 6763 7: '_' then 1..15 letters, digits and hyphens.
bool IsServiceLabel(std::string_view label) {
  if (label.size() < 2 || label.size() > 16 || label[0] != '_') return false;
  return IsHostLabel(label.substr(1));
}

}  // namespace

std::string_view ApplicationTypeName(ApplicationType type) {
  switch (type) {
    case ApplicationType::kDefault:
      return "Default";
    case ApplicationType::kRealTimeCapable:
      return "RealTimeCapable";
  }
  return "Default";
}

std::string_view PeripheralKindName(PeripheralKind kind) {
  switch (kind) {
    case PeripheralKind::kGpio:
      return "Gpio";
    case PeripheralKind::kUart:
      return "Uart";
    case PeripheralKind::kI2cMaster:
      return "I2cMaster";
    case PeripheralKind::kSpiMaster:
      return "SpiMaster";
    case PeripheralKind::kPwm:
      return "Pwm";
    case PeripheralKind::kAdc:
      return "Adc";
  }
  return "Gpio";
}

bool IsValidPeripheralName(std::string_view name) {
  if (name.empty() || name.size() > kMaxPeripheralNameBytes || !IsAsciiAlnum(name[0])) {
    return false;
  }
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return IsAsciiAlnum(c) || c == '_' || c == '-' || c == '.'; });
}

bool IsValidConstantName(std::string_view name) {
  if (name.empty() || name.size() > kMaxConstantNameBytes) return false;
  if (!IsAsciiAlpha(name[0]) && name[0] != '_') return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return IsAsciiAlnum(c) || c == '_'; });
}

bool PeripheralRef::IsConstant() const {
  const auto* s = std::get_if<std::string>(&value);
  return s != nullptr && s->starts_with('$');
}

std::string_view PeripheralRef::ConstantName() const {
  if (!IsConstant()) return {};
  return std::string_view(std::get<std::string>(value)).substr(1);
}

std::string PeripheralRef::ToString() const {
  if (const auto* n = std::get_if<int64_t>(&value)) return std::to_string(*n);
  return std::get<std::string>(value);
}

Result<void> CheckPeripheralRef(PeripheralKind kind, const PeripheralRef& ref) {
  if (const auto* n = std::get_if<int64_t>(&ref.value)) {
    if (kind != PeripheralKind::kGpio) {
      return Fail(ErrorCode::kInvalidArgument, "{} is not a {} name", *n, PeripheralKindName(kind));
    }
    if (*n < 0 || *n > kMaxGpioNumber) {
      return Fail(ErrorCode::kInvalidArgument, "{} is out of range 0..{}", *n, kMaxGpioNumber);
    }
    return Ok();
  }
  const std::string& s = std::get<std::string>(ref.value);
  if (ref.IsConstant()) {
    if (!IsValidConstantName(ref.ConstantName())) {
      return Fail(ErrorCode::kInvalidArgument, "{} is not a valid '$NAME' constant",
                  QuoteForMessage(s));
    }
    return Ok();
  }
  if (kind == PeripheralKind::kGpio) {
    return Fail(ErrorCode::kInvalidArgument, "{} is neither a GPIO number nor a '$NAME' constant",
                QuoteForMessage(s));
  }
  if (!IsValidPeripheralName(s)) {
    return Fail(ErrorCode::kInvalidArgument,
                "{} is not a peripheral name (1..{} letters, digits, '_', '-' or '.')",
                QuoteForMessage(s), kMaxPeripheralNameBytes);
  }
  return Ok();
}

namespace {

// Shared by the const and non-const PeripheralList.
template <typename Caps>
auto& ListOf(Caps& caps, PeripheralKind kind) {
  switch (kind) {
    case PeripheralKind::kGpio:
      return caps.gpio;
    case PeripheralKind::kUart:
      return caps.uart;
    case PeripheralKind::kI2cMaster:
      return caps.i2c_master;
    case PeripheralKind::kSpiMaster:
      return caps.spi_master;
    case PeripheralKind::kPwm:
      return caps.pwm;
    case PeripheralKind::kAdc:
      return caps.adc;
  }
  return caps.gpio;
}

}  // namespace

std::vector<PeripheralRef>& PeripheralList(Capabilities& caps, PeripheralKind kind) {
  return ListOf(caps, kind);
}

const std::vector<PeripheralRef>& PeripheralList(const Capabilities& caps, PeripheralKind kind) {
  return ListOf(caps, kind);
}

Result<Capabilities> ParseCapabilities(const Json& capabilities, std::string_view path,
                                       const ManifestLimits& limits) {
  if (!capabilities.is_object()) return kManifest.WrongType(path, "an object", capabilities);
  // Refuse unknown capabilities before reading any: an unknown one may be a permission we would
  // otherwise silently drop. A capability is named by its key alone, wherever it sits.
  for (const auto& [key, unused] : capabilities.items()) {
    if (!IsKnownCapability(key)) {
      return kManifest.Invalid("", "unknown capability {}", QuoteForMessage(key));
    }
  }
  auto field = [&](std::string_view name) { return FindMember(capabilities, name); };
  auto sub = [&](std::string_view name) { return JsonPathJoin(path, name); };

  Capabilities c;
  if (const Json* v = field(kAllowedConnections)) {
    MOAT_ASSIGN_OR_RETURN(c.allowed_connections,
                          GetAllowedConnections(*v, sub(kAllowedConnections), limits));
  }
  if (const Json* v = field(kAllowedTcpServerPorts)) {
    MOAT_ASSIGN_OR_RETURN(c.allowed_tcp_server_ports,
                          GetPorts(*v, sub(kAllowedTcpServerPorts), limits));
  }
  if (const Json* v = field(kAllowedUdpServerPorts)) {
    MOAT_ASSIGN_OR_RETURN(c.allowed_udp_server_ports,
                          GetPorts(*v, sub(kAllowedUdpServerPorts), limits));
  }
  if (const Json* v = field(kAllowedApplicationConnections)) {
    MOAT_ASSIGN_OR_RETURN(
        c.allowed_application_connections,
        GetApplicationConnections(*v, sub(kAllowedApplicationConnections), limits));
  }
  for (PeripheralKind kind : kAllPeripheralKinds) {
    std::string_view name = PeripheralKindName(kind);
    if (const Json* v = field(name)) {
      MOAT_ASSIGN_OR_RETURN(PeripheralList(c, kind), GetPeripherals(kind, *v, sub(name), limits));
    }
  }
  if (const Json* v = field(kDeviceAuthentication)) {
    MOAT_ASSIGN_OR_RETURN(c.device_authentication,
                          GetDeviceAuthentication(*v, sub(kDeviceAuthentication), limits));
  }
  if (const Json* v = field(kMutableStorage)) {
    MOAT_ASSIGN_OR_RETURN(c.mutable_storage, GetMutableStorage(*v, sub(kMutableStorage)));
  }
  if (const Json* v = field(kPowerControls)) {
    MOAT_ASSIGN_OR_RETURN(c.power_controls, GetPowerControls(*v, sub(kPowerControls), limits));
  }
  for (const BoolCapability& b : kBoolCapabilities) {
    if (const Json* v = field(b.name)) {
      MOAT_ASSIGN_OR_RETURN(c.*b.member, kManifest.ReadBool(*v, sub(b.name)));
    }
  }
  return c;
}

Result<AppManifest> ParseAppManifest(std::string_view json, const ManifestLimits& limits) {
  // A manifest nests three levels deep (Capabilities.MutableStorage.SizeKB); allow some slack
  // so that a misplaced object gets a field error rather than a depth error.
  MOAT_ASSIGN_OR_RETURN(
      Json doc, ParseJson(json, kWhat, JsonLimits{.max_bytes = limits.max_bytes, .max_depth = 8}));
  if (!doc.is_object()) return kManifest.WrongType("", "a JSON object", doc);
  auto field = [&](std::string_view name) { return FindMember(doc, name); };

  // The schema version decides how to read everything else, so it comes first.
  AppManifest m;
  const Json* version = field(kSchemaVersion);
  if (version == nullptr) {
    return kManifest.Invalid("", "missing required field '{}'", kSchemaVersion);
  }
  MOAT_TRY(kManifest.ExpectVersion(*version, kSchemaVersion, 1));
  m.schema_version = 1;

  MOAT_TRY(kManifest.KnownFields(doc, "", kTopLevelFields));
  for (std::string_view name : kRequiredFields) {
    if (field(name) == nullptr) return kManifest.Invalid("", "missing required field '{}'", name);
  }

  MOAT_ASSIGN_OR_RETURN(m.name, GetName(*field(kName), kName, limits));
  MOAT_ASSIGN_OR_RETURN(m.component_id, GetComponentId(*field(kComponentId), kComponentId, limits));
  MOAT_ASSIGN_OR_RETURN(m.entry_point, GetEntryPoint(*field(kEntryPoint), kEntryPoint, limits));
  if (const Json* v = field(kCmdArgs)) {
    auto read_arg = [&](const Json& item, std::string_view arg_path) -> Result<std::string> {
      MOAT_ASSIGN_OR_RETURN(std::string arg, GetString(item, arg_path, limits));
      // Arguments reach execve(), where a NUL would silently cut them short.
      if (arg.find('\0') != std::string::npos) {
        return kManifest.Invalid(arg_path, "contains a NUL character");
      }
      return arg;
    };
    // Repeated arguments are ordinary ("-v -v"), so no `describe`.
    MOAT_ASSIGN_OR_RETURN(m.cmd_args, GetList<std::string>(*v, kCmdArgs, limits, read_arg));
  }
  if (const Json* v = field(kApplicationType)) {
    MOAT_ASSIGN_OR_RETURN(m.application_type, GetApplicationType(*v, kApplicationType, limits));
  }
  if (const Json* v = field(kMallocVersion)) {
    MOAT_ASSIGN_OR_RETURN(int64_t malloc_version, kManifest.ReadInt(*v, kMallocVersion, 1, 2));
    m.malloc_version = static_cast<int>(malloc_version);
  }
  MOAT_ASSIGN_OR_RETURN(m.capabilities,
                        ParseCapabilities(*field(kCapabilities), kCapabilities, limits));
  if (m.application_type == ApplicationType::kRealTimeCapable) {
    MOAT_TRY(CheckRealTimeCapabilities(m.capabilities, kCapabilities));
  }
  return m;
}

Json ToJson(const Capabilities& c) {
  Json j = Json::object();
  if (!c.allowed_connections.empty()) j[kAllowedConnections] = c.allowed_connections;
  if (!c.allowed_tcp_server_ports.empty()) j[kAllowedTcpServerPorts] = c.allowed_tcp_server_ports;
  if (!c.allowed_udp_server_ports.empty()) j[kAllowedUdpServerPorts] = c.allowed_udp_server_ports;
  if (!c.allowed_application_connections.empty()) {
    Json list = Json::array();
    for (const Guid& g : c.allowed_application_connections) list.push_back(g.ToString());
    j[kAllowedApplicationConnections] = std::move(list);
  }
  for (PeripheralKind kind : kAllPeripheralKinds) {
    const auto& refs = PeripheralList(c, kind);
    if (refs.empty()) continue;
    Json list = Json::array();
    for (const PeripheralRef& ref : refs) {
      std::visit([&](const auto& v) { list.push_back(v); }, ref.value);
    }
    j[PeripheralKindName(kind)] = std::move(list);
  }
  if (c.device_authentication) {
    const DeviceAuthentication& auth = *c.device_authentication;
    j[kDeviceAuthentication] = auth.tenant ? auth.tenant->ToString() : auth.placeholder;
  }
  if (c.mutable_storage) j[kMutableStorage] = Json{{kSizeKb, c.mutable_storage->size_kb}};
  if (!c.power_controls.empty()) j[kPowerControls] = c.power_controls;
  for (const BoolCapability& b : kBoolCapabilities) {
    if (c.*b.member) j[b.name] = true;
  }
  return j;
}

Json ToJson(const AppManifest& m) {
  Json j = Json::object();
  j[kSchemaVersion] = m.schema_version;
  j[kName] = m.name;
  j[kComponentId] = m.component_id.ToString();
  j[kEntryPoint] = m.entry_point;
  j[kCmdArgs] = m.cmd_args;
  j[kApplicationType] = ApplicationTypeName(m.application_type);
  if (m.malloc_version) j[kMallocVersion] = *m.malloc_version;
  j[kCapabilities] = ToJson(m.capabilities);
  return j;
}

ConnectionKind ClassifyAllowedConnection(std::string_view entry) {
  if (entry.empty() || entry.size() > 253) return ConnectionKind::kPlaceholder;
  if (IsIpv4Address(entry)) return ConnectionKind::kIpv4Address;
  if (IsIpv6Address(entry)) return ConnectionKind::kIpv6Address;
  std::vector<std::string_view> labels;
  size_t start = 0;
  while (true) {
    size_t end = entry.find('.', start);
    labels.push_back(entry.substr(start, end == std::string_view::npos ? entry.npos : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  if (labels[0] == "*") {
    // At least two labels under the wildcard: "*.com" would open a whole top-level domain.
    std::vector<std::string_view> rest(labels.begin() + 1, labels.end());
    if (rest.size() >= 2 && IsHostName(rest)) return ConnectionKind::kWildcardHostName;
    return ConnectionKind::kPlaceholder;
  }
  if (labels.size() >= 3 && IsServiceLabel(labels[0]) &&
      (labels[1] == "_tcp" || labels[1] == "_udp")) {
    std::vector<std::string_view> domain(labels.begin() + 2, labels.end());
    if (IsHostName(domain)) return ConnectionKind::kDnsSdService;
    return ConnectionKind::kPlaceholder;
  }
  if (IsHostName(labels)) return ConnectionKind::kHostName;
  return ConnectionKind::kPlaceholder;
}

}  // namespace moat::formats
