#include "formats/app_manifest.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/json.h"

namespace moat::formats {
namespace {

namespace fs = std::filesystem;

// The compatibility data lives beside the repository: /work/shared/compat.
const fs::path kCompatDir =
    fs::path(MOAT_SOURCE_DIR) / ".." / "shared" / "compat" / "azure-sphere-manifests";

struct CompatFile {
  std::string name;
  std::string text;
};

// All *.json files directly in `dir`, sorted by name. Fails the test if the directory is missing:
// the compatibility check must never pass by finding nothing.
std::vector<CompatFile> ReadJsonFiles(const fs::path& dir) {
  std::vector<CompatFile> out;
  EXPECT_TRUE(fs::is_directory(dir)) << "missing compatibility data: " << dir;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    auto text = ReadFile(entry.path(), 1 << 20);
    EXPECT_TRUE(text) << text.error().message();
    if (text) out.push_back({entry.path().filename().string(), *text});
  }
  std::sort(out.begin(), out.end(),
            [](const CompatFile& a, const CompatFile& b) { return a.name < b.name; });
  return out;
}

AppManifest MustParse(std::string_view text) {
  auto m = ParseAppManifest(text);
  EXPECT_TRUE(m) << m.error().message();
  return m ? *m : AppManifest{};
}

AppManifest MustParseCompat(std::string_view file) {
  auto files = ReadJsonFiles(kCompatDir);
  for (const CompatFile& f : files) {
    if (f.name == file) return MustParse(f.text);
  }
  ADD_FAILURE() << "no compat manifest " << file;
  return {};
}

// A small valid manifest that tests change one field of.
Json Base() {
  return Json::parse(R"({
    "SchemaVersion": 1,
    "Name": "Test",
    "ComponentId": "9ccf1aac-b73b-4aa5-a5db-628a5fdf99b9",
    "EntryPoint": "/bin/app",
    "CmdArgs": ["--verbose"],
    "Capabilities": {"Gpio": [8]},
    "ApplicationType": "Default"
  })");
}

Json WithField(std::string_view key, std::string_view raw_value) {
  Json j = Base();
  j[std::string(key)] = Json::parse(raw_value);
  return j;
}

Json WithCapability(std::string_view key, std::string_view raw_value) {
  Json j = Base();
  j["Capabilities"][std::string(key)] = Json::parse(raw_value);
  return j;
}

Json Without(std::initializer_list<std::string_view> keys) {
  Json j = Base();
  for (std::string_view k : keys) j.erase(std::string(k));
  return j;
}

Error ParseError(const Json& j) {
  auto m = ParseAppManifest(DumpJson(j));
  EXPECT_FALSE(m) << DumpJson(j);
  return m ? Error(ErrorCode::kInternal, "parsed") : m.error();
}

std::string ParseMessage(const Json& j) { return ParseError(j).message(); }

TEST(AppManifestCompatTest, EveryRealManifestParses) {
  auto files = ReadJsonFiles(kCompatDir);
  ASSERT_EQ(files.size(), 73u);
  int real_time = 0, default_type = 0, implicit_default = 0;
  for (const CompatFile& f : files) {
    auto m = ParseAppManifest(f.text);
    ASSERT_TRUE(m) << f.name << ": " << m.error().message();
    if (m->application_type == ApplicationType::kRealTimeCapable) {
      ++real_time;
    } else {
      ++default_type;
      if (!Json::parse(f.text).contains("ApplicationType")) ++implicit_default;
    }
  }
  EXPECT_EQ(real_time, 7);
  EXPECT_EQ(default_type, 66);
  EXPECT_EQ(implicit_default, 1);
}

TEST(AppManifestCompatTest, RoundTripsThroughToJson) {
  auto files = ReadJsonFiles(kCompatDir);
  ASSERT_EQ(files.size(), 73u);
  for (const CompatFile& f : files) {
    AppManifest m = MustParse(f.text);
    std::string dumped = DumpJson(ToJson(m));
    auto again = ParseAppManifest(dumped);
    ASSERT_TRUE(again) << f.name << ": " << again.error().message();
    EXPECT_EQ(*again, m) << f.name;
    EXPECT_EQ(DumpJson(ToJson(*again)), dumped) << f.name;
  }
}

TEST(AppManifestCompatTest, FragmentsAreRejectedAsManifestsButTheirCapabilitiesParse) {
  auto fragments = ReadJsonFiles(kCompatDir / "fragments");
  ASSERT_EQ(fragments.size(), 10u);
  for (const CompatFile& f : fragments) {
    auto m = ParseAppManifest(f.text);
    ASSERT_FALSE(m) << f.name;
    EXPECT_EQ(m.error().code(), ErrorCode::kInvalidArgument);
    // Every fragment holds only Capabilities, so the first missing field is the first one.
    EXPECT_EQ(m.error().message(), "app manifest: missing required field 'SchemaVersion'")
        << f.name;

    auto doc = ParseJson(f.text, f.name);
    ASSERT_TRUE(doc) << doc.error().message();
    ASSERT_TRUE(doc->contains("Capabilities")) << f.name;
    auto caps = ParseCapabilities((*doc)["Capabilities"]);
    ASSERT_TRUE(caps) << f.name << ": " << caps.error().message();
    EXPECT_NE(*caps, Capabilities{}) << f.name << " grants nothing";
  }
}

TEST(AppManifestCompatTest, ReadsTheValueShapesRealManifestsUse) {
  // Raw GPIO numbers, names and partner connections in a real-time app.
  AppManifest robot = MustParseCompat("gallery__BalancingRobot_Software_RTOS_app_manifest.json");
  EXPECT_EQ(robot.application_type, ApplicationType::kRealTimeCapable);
  EXPECT_EQ(robot.capabilities.gpio, (std::vector<PeripheralRef>{{0}, {1}, {2}, {12}, {13}, {16}}));
  EXPECT_EQ(robot.capabilities.i2c_master,
            (std::vector<PeripheralRef>{{std::string("ISU0")}, {std::string("ISU1")}}));
  EXPECT_EQ(robot.capabilities.pwm[0].ToString(), "PWM-CONTROLLER-1");
  ASSERT_EQ(robot.capabilities.allowed_application_connections.size(), 1u);
  EXPECT_EQ(robot.capabilities.allowed_application_connections[0].ToString(),
            "885bc367-b159-44a5-91fa-3feb53a82317");

  // "$NAME" constants, a placeholder tenant and a placeholder host.
  AppManifest co2 = MustParseCompat("gallery__CO2_MonitorHealthySpaces_src_app_manifest.json");
  ASSERT_EQ(co2.capabilities.gpio.size(), 2u);
  EXPECT_TRUE(co2.capabilities.gpio[0].IsConstant());
  EXPECT_EQ(co2.capabilities.gpio[0].ConstantName(), "AZURE_CONNECTED_LED");
  EXPECT_EQ(co2.capabilities.gpio[0].ToString(), "$AZURE_CONNECTED_LED");
  ASSERT_TRUE(co2.capabilities.device_authentication);
  EXPECT_FALSE(co2.capabilities.device_authentication->tenant);
  EXPECT_EQ(co2.capabilities.device_authentication->placeholder,
            "REPLACE_WITH_YOUR_AZURE_SPHERE_TENANT_ID");
  EXPECT_EQ(co2.capabilities.power_controls, std::vector<std::string>{"ForceReboot"});
  EXPECT_EQ(ClassifyAllowedConnection(co2.capabilities.allowed_connections[1]),
            ConnectionKind::kPlaceholder);

  // The nil tenant means "the device's current tenant".
  AppManifest iot = MustParseCompat("samples__Samples_AzureIoT_app_manifest.json");
  ASSERT_TRUE(iot.capabilities.device_authentication);
  ASSERT_TRUE(iot.capabilities.device_authentication->tenant);
  EXPECT_TRUE(iot.capabilities.device_authentication->tenant->IsNil());

  AppManifest storage = MustParseCompat("samples__Samples_MutableStorage_app_manifest.json");
  ASSERT_TRUE(storage.capabilities.mutable_storage);
  EXPECT_EQ(storage.capabilities.mutable_storage->size_kb, 8u);

  // An empty AllowedConnections entry is kept as written.
  AppManifest littlefs =
      MustParseCompat("gallery__LittleFs_Encrypted_RemoteDisk_src_HighLevelApp_app_manifest.json");
  EXPECT_EQ(littlefs.capabilities.allowed_connections, std::vector<std::string>{""});

  // An explicit false grants nothing.
  AppManifest pwm = MustParseCompat("samples__Samples_PWM_PWM_HighLevelApp_app_manifest.json");
  EXPECT_FALSE(pwm.capabilities.wifi_config);
  EXPECT_EQ(pwm.capabilities.pwm[0].ToString(), "$SAMPLE_LED_PWM_CONTROLLER");

  AppManifest hello =
      MustParseCompat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp_app_manifest.json");
  EXPECT_EQ(hello.schema_version, 1);
  EXPECT_EQ(hello.name, "HelloWorld_HighLevelApp");
  EXPECT_EQ(hello.entry_point, "/bin/app");
  EXPECT_EQ(hello.malloc_version, 2);
}

TEST(AppManifestTest, ParsesTheBaseManifest) {
  AppManifest m = MustParse(DumpJson(Base()));
  EXPECT_EQ(m.name, "Test");
  EXPECT_EQ(m.component_id.ToString(), "9ccf1aac-b73b-4aa5-a5db-628a5fdf99b9");
  EXPECT_EQ(m.cmd_args, std::vector<std::string>{"--verbose"});
  EXPECT_EQ(m.application_type, ApplicationType::kDefault);
  EXPECT_FALSE(m.malloc_version);
  EXPECT_EQ(m.capabilities.gpio, std::vector<PeripheralRef>{{8}});
}

TEST(AppManifestTest, ApplicationTypeDefaultsToDefault) {
  EXPECT_EQ(MustParse(DumpJson(Without({"ApplicationType"}))).application_type,
            ApplicationType::kDefault);
  EXPECT_EQ(
      MustParse(DumpJson(WithField("ApplicationType", R"("RealTimeCapable")"))).application_type,
      ApplicationType::kRealTimeCapable);
}

TEST(AppManifestTest, ReadsEveryCapability) {
  Json j = Base();
  j["MallocVersion"] = 1;
  j["Capabilities"] = Json::parse(R"({
    "AllowedConnections": ["example.com", "192.168.0.2"],
    "AllowedTcpServerPorts": [1, 65535],
    "AllowedUdpServerPorts": [1824],
    "AllowedApplicationConnections": ["005180BC-402F-4CB3-A662-72937DBCDE47"],
    "Gpio": [0, "$SAMPLE_LED"], "Uart": ["ISU0"], "I2cMaster": ["$I2C"],
    "SpiMaster": ["ISU1"], "Pwm": ["PWM-CONTROLLER-0"], "Adc": ["ADC-CONTROLLER-0"],
    "DeviceAuthentication": "52fecdd6-5a57-4cd2-bea1-ec7fa1773c43",
    "MutableStorage": {"SizeKB": 65536},
    "PowerControls": ["ForcePowerDown", "ForceReboot", "SetPowerProfile"],
    "SystemEventNotifications": true, "SoftwareUpdateDeferral": true, "NetworkConfig": true,
    "WifiConfig": true, "EnterpriseWifiConfig": true, "CertStore": true, "SntpService": true,
    "DhcpService": true, "TimeSyncConfig": true, "SystemTime": true,
    "ReadNetworkProxyConfig": true, "HeapMemStats": true
  })");
  AppManifest m = MustParse(DumpJson(j));
  const Capabilities& c = m.capabilities;
  EXPECT_EQ(m.malloc_version, 1);
  EXPECT_EQ(c.allowed_connections, (std::vector<std::string>{"example.com", "192.168.0.2"}));
  EXPECT_EQ(c.allowed_tcp_server_ports, (std::vector<uint16_t>{1, 65535}));
  EXPECT_EQ(c.allowed_udp_server_ports, (std::vector<uint16_t>{1824}));
  EXPECT_EQ(c.allowed_application_connections[0].ToString(),
            "005180bc-402f-4cb3-a662-72937dbcde47");
  EXPECT_EQ(c.gpio, (std::vector<PeripheralRef>{{0}, {std::string("$SAMPLE_LED")}}));
  EXPECT_EQ(c.uart[0].ToString(), "ISU0");
  EXPECT_EQ(c.i2c_master[0].ConstantName(), "I2C");
  EXPECT_EQ(c.spi_master[0].ToString(), "ISU1");
  EXPECT_EQ(c.pwm[0].ToString(), "PWM-CONTROLLER-0");
  EXPECT_EQ(c.adc[0].ToString(), "ADC-CONTROLLER-0");
  EXPECT_EQ(c.device_authentication->tenant->ToString(), "52fecdd6-5a57-4cd2-bea1-ec7fa1773c43");
  EXPECT_EQ(c.mutable_storage->size_kb, 65536u);
  EXPECT_EQ(c.power_controls.size(), 3u);
  EXPECT_TRUE(c.system_event_notifications && c.software_update_deferral && c.network_config &&
              c.wifi_config && c.enterprise_wifi_config && c.cert_store && c.sntp_service &&
              c.dhcp_service && c.time_sync_config && c.system_time &&
              c.read_network_proxy_config && c.heap_mem_stats);
  // And back, with Azure Sphere's names.
  Json out = ToJson(m);
  EXPECT_EQ(out["Capabilities"], j["Capabilities"].patch(Json::parse(R"([
    {"op": "replace", "path": "/AllowedApplicationConnections/0",
     "value": "005180bc-402f-4cb3-a662-72937dbcde47"}])")));
  EXPECT_EQ(ParseAppManifest(DumpJson(out)).value(), m);
}

TEST(AppManifestTest, ToJsonLeavesOutWhatGrantsNothing) {
  Json j = Base();
  j["Capabilities"] = Json::parse(R"({"AllowedConnections": [], "WifiConfig": false})");
  j.erase("CmdArgs");
  j.erase("ApplicationType");
  Json out = ToJson(MustParse(DumpJson(j)));
  EXPECT_EQ(DumpJson(out),
            R"({"ApplicationType":"Default","Capabilities":{},"CmdArgs":[],)"
            R"("ComponentId":"9ccf1aac-b73b-4aa5-a5db-628a5fdf99b9","EntryPoint":"/bin/app",)"
            R"("Name":"Test","SchemaVersion":1})");
}

TEST(AppManifestTest, ReportsTheFirstMissingRequiredField) {
  EXPECT_EQ(ParseMessage(Without({"SchemaVersion", "Name"})),
            "app manifest: missing required field 'SchemaVersion'");
  EXPECT_EQ(ParseMessage(Without({"Name", "EntryPoint", "Capabilities"})),
            "app manifest: missing required field 'Name'");
  EXPECT_EQ(ParseMessage(Without({"ComponentId", "Capabilities"})),
            "app manifest: missing required field 'ComponentId'");
  EXPECT_EQ(ParseMessage(Without({"EntryPoint", "Capabilities"})),
            "app manifest: missing required field 'EntryPoint'");
  EXPECT_EQ(ParseMessage(Without({"Capabilities"})),
            "app manifest: missing required field 'Capabilities'");
  EXPECT_EQ(ParseError(Without({"Name"})).code(), ErrorCode::kInvalidArgument);
  // Optional fields may be left out.
  EXPECT_TRUE(ParseAppManifest(DumpJson(Without({"CmdArgs", "ApplicationType"}))));
}

struct BadCase {
  Json manifest;
  std::string message;
};

void ExpectInvalid(const std::vector<BadCase>& cases) {
  for (const BadCase& c : cases) {
    Error e = ParseError(c.manifest);
    EXPECT_EQ(e.message(), c.message) << DumpJson(c.manifest);
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << c.message;
  }
}

TEST(AppManifestTest, RejectsBadTopLevelFields) {
  ExpectInvalid({
      {WithField("SchemaVersion", "2"),
       "app manifest: SchemaVersion: 2 is not supported (expected 1)"},
      {WithField("SchemaVersion", "0"),
       "app manifest: SchemaVersion: 0 is not supported (expected 1)"},
      {WithField("SchemaVersion", R"("1")"),
       "app manifest: SchemaVersion: expected an integer, got string"},
      {WithField("SchemaVersion", "1.0"),
       "app manifest: SchemaVersion: expected an integer, got number"},
      {WithField("Foo", "1"), "app manifest: unknown field 'Foo'"},
      {WithField("capabilities", "{}"), "app manifest: unknown field 'capabilities'"},
      {WithField("Name", "5"), "app manifest: Name: expected a string, got integer"},
      {WithField("Name", R"("")"), "app manifest: Name: must not be empty"},
      {WithField("Name", R"("a\nb")"), "app manifest: Name: contains a control character"},
      {WithField("ComponentId", R"("not-a-guid")"),
       "app manifest: ComponentId: 'not-a-guid' is not a GUID (expected 36 characters like "
       "01234567-89ab-cdef-0123-456789abcdef)"},
      {WithField("ComponentId", R"("9ccf1aac-b73b-4aa5-a5db-628a5fdf99bz")"),
       "app manifest: ComponentId: '9ccf1aac-b73b-4aa5-a5db-628a5fdf99bz' is not a GUID "
       "(non-hexadecimal character)"},
      {WithField("ComponentId", R"("00000000-0000-0000-0000-000000000000")"),
       "app manifest: ComponentId: the nil GUID is not a component ID"},
      {WithField("ComponentId", "[]"), "app manifest: ComponentId: expected a string, got array"},
      {WithField("EntryPoint", R"("bin/app")"),
       "app manifest: EntryPoint: 'bin/app' is not an absolute path"},
      {WithField("EntryPoint", R"("/bin/../../etc/shadow")"),
       "app manifest: EntryPoint: '/bin/../../etc/shadow' is not a normalized path (empty, '.' "
       "or '..' component)"},
      {WithField("EntryPoint", R"("/bin//app")"),
       "app manifest: EntryPoint: '/bin//app' is not a normalized path (empty, '.' or '..' "
       "component)"},
      {WithField("EntryPoint", R"("/./app")"),
       "app manifest: EntryPoint: '/./app' is not a normalized path (empty, '.' or '..' "
       "component)"},
      {WithField("EntryPoint", R"("/bin/")"),
       "app manifest: EntryPoint: '/bin/' is not a normalized path (empty, '.' or '..' "
       "component)"},
      {WithField("EntryPoint", R"("/")"), "app manifest: EntryPoint: '/' does not name a file"},
      {WithField("EntryPoint", R"("")"), "app manifest: EntryPoint: must not be empty"},
      {WithField("CmdArgs", R"("--verbose")"),
       "app manifest: CmdArgs: expected an array, got string"},
      {WithField("CmdArgs", R"(["a", 1])"),
       "app manifest: CmdArgs[1]: expected a string, got integer"},
      {WithField("CmdArgs", R"(["a\u0000b"])"),
       "app manifest: CmdArgs[0]: contains a NUL character"},
      {WithField("ApplicationType", R"("realtimecapable")"),
       "app manifest: ApplicationType: 'realtimecapable' is not one of Default, RealTimeCapable"},
      {WithField("MallocVersion", "3"), "app manifest: MallocVersion: 3 is out of range 1..2"},
      {WithField("MallocVersion", "0"), "app manifest: MallocVersion: 0 is out of range 1..2"},
      {WithField("Capabilities", "[]"),
       "app manifest: Capabilities: expected an object, got array"},
      {WithField("Capabilities", "null"),
       "app manifest: Capabilities: expected an object, got null"},
  });
  EXPECT_EQ(ParseAppManifest("[]").error().message(),
            "app manifest: expected a JSON object, got array");
}

TEST(AppManifestTest, RejectsBadCapabilities) {
  ExpectInvalid({
      {WithCapability("Bluetooth", "true"), "app manifest: unknown capability 'Bluetooth'"},
      {WithCapability("gpio", "[1]"), "app manifest: unknown capability 'gpio'"},
      // Ports.
      {WithCapability("AllowedTcpServerPorts", "[0]"),
       "app manifest: Capabilities.AllowedTcpServerPorts[0]: 0 is out of range 1..65535"},
      {WithCapability("AllowedTcpServerPorts", "[80, 65536]"),
       "app manifest: Capabilities.AllowedTcpServerPorts[1]: 65536 is out of range 1..65535"},
      {WithCapability("AllowedTcpServerPorts", "[80, 70000]"),
       "app manifest: Capabilities.AllowedTcpServerPorts[1]: 70000 is out of range 1..65535"},
      {WithCapability("AllowedTcpServerPorts", "[-1]"),
       "app manifest: Capabilities.AllowedTcpServerPorts[0]: -1 is out of range 1..65535"},
      {WithCapability("AllowedTcpServerPorts", "[18446744073709551615]"),
       "app manifest: Capabilities.AllowedTcpServerPorts[0]: 18446744073709551615 is out of "
       "range 1..65535"},
      {WithCapability("AllowedUdpServerPorts", "[8080, 8080]"),
       "app manifest: Capabilities.AllowedUdpServerPorts[1]: 8080 is listed twice"},
      {WithCapability("AllowedUdpServerPorts", R"(["53"])"),
       "app manifest: Capabilities.AllowedUdpServerPorts[0]: expected an integer, got string"},
      {WithCapability("AllowedUdpServerPorts", "[53.0]"),
       "app manifest: Capabilities.AllowedUdpServerPorts[0]: expected an integer, got number"},
      {WithCapability("AllowedUdpServerPorts", "53"),
       "app manifest: Capabilities.AllowedUdpServerPorts: expected an array, got integer"},
      // Mutable storage.
      {WithCapability("MutableStorage", R"({"SizeKB": 0})"),
       "app manifest: Capabilities.MutableStorage.SizeKB: 0 is out of range 1..65536"},
      {WithCapability("MutableStorage", R"({"SizeKB": 65537})"),
       "app manifest: Capabilities.MutableStorage.SizeKB: 65537 is out of range 1..65536"},
      {WithCapability("MutableStorage", R"({"SizeKB": "8"})"),
       "app manifest: Capabilities.MutableStorage.SizeKB: expected an integer, got string"},
      {WithCapability("MutableStorage", R"({})"),
       "app manifest: Capabilities.MutableStorage: missing required field 'SizeKB'"},
      {WithCapability("MutableStorage", R"({"SizeKB": 8, "SizeMB": 1})"),
       "app manifest: Capabilities.MutableStorage: unknown field 'SizeMB'"},
      {WithCapability("MutableStorage", "8"),
       "app manifest: Capabilities.MutableStorage: expected an object, got integer"},
      // GUIDs.
      {WithCapability("AllowedApplicationConnections", R"(["005180bc"])"),
       "app manifest: Capabilities.AllowedApplicationConnections[0]: '005180bc' is not a GUID "
       "(expected 36 characters like 01234567-89ab-cdef-0123-456789abcdef)"},
      {WithCapability("AllowedApplicationConnections",
                      R"(["005180bc-402f-4cb3-a662-72937dbcde47",
                          "005180BC-402F-4CB3-A662-72937DBCDE47"])"),
       "app manifest: Capabilities.AllowedApplicationConnections[1]: "
       "'005180bc-402f-4cb3-a662-72937dbcde47' is listed twice"},
      {WithCapability("AllowedApplicationConnections",
                      R"(["00000000-0000-0000-0000-000000000000"])"),
       "app manifest: Capabilities.AllowedApplicationConnections[0]: the nil GUID is not a "
       "component ID"},
      {WithCapability("DeviceAuthentication", R"("52fecdd6-5a57-4cd2-bea1")"),
       "app manifest: Capabilities.DeviceAuthentication: '52fecdd6-5a57-4cd2-bea1' is not a GUID "
       "(expected 36 characters like 01234567-89ab-cdef-0123-456789abcdef)"},
      {WithCapability("DeviceAuthentication", R"("abcdef")"),
       "app manifest: Capabilities.DeviceAuthentication: 'abcdef' is not a GUID (expected 36 "
       "characters like 01234567-89ab-cdef-0123-456789abcdef)"},
      {WithCapability("DeviceAuthentication", R"("YOUR TENANT")"),
       "app manifest: Capabilities.DeviceAuthentication: 'YOUR TENANT' is not a GUID (expected "
       "36 characters like 01234567-89ab-cdef-0123-456789abcdef)"},
      {WithCapability("DeviceAuthentication", "true"),
       "app manifest: Capabilities.DeviceAuthentication: expected a string, got boolean"},
      // Peripherals.
      {WithCapability("Gpio", "[true]"),
       "app manifest: Capabilities.Gpio[0]: expected an integer or a string, got boolean"},
      {WithCapability("Gpio", "[70000]"),
       "app manifest: Capabilities.Gpio[0]: 70000 is out of range 0..65535"},
      {WithCapability("Gpio", "[-1]"),
       "app manifest: Capabilities.Gpio[0]: -1 is out of range 0..65535"},
      {WithCapability("Gpio", R"(["LED"])"),
       "app manifest: Capabilities.Gpio[0]: 'LED' is neither a GPIO number nor a '$NAME' "
       "constant"},
      {WithCapability("Gpio", R"(["$"])"),
       "app manifest: Capabilities.Gpio[0]: '$' is not a valid '$NAME' constant"},
      {WithCapability("Gpio", R"(["$1LED"])"),
       "app manifest: Capabilities.Gpio[0]: '$1LED' is not a valid '$NAME' constant"},
      {WithCapability("Gpio", "[8, 9, 8]"),
       "app manifest: Capabilities.Gpio[2]: 8 is listed twice"},
      {WithCapability("Gpio", R"(["$LED", "$LED"])"),
       "app manifest: Capabilities.Gpio[1]: '$LED' is listed twice"},
      {WithCapability("Uart", "[0]"),
       "app manifest: Capabilities.Uart[0]: expected a string, got integer"},
      {WithCapability("Uart", R"(["ISU 0"])"),
       "app manifest: Capabilities.Uart[0]: 'ISU 0' is not a peripheral name (1..64 letters, "
       "digits, '_', '-' or '.')"},
      {WithCapability("I2cMaster", R"([""])"),
       "app manifest: Capabilities.I2cMaster[0]: '' is not a peripheral name (1..64 letters, "
       "digits, '_', '-' or '.')"},
      {WithCapability("SpiMaster", R"(["ISU1", "ISU1"])"),
       "app manifest: Capabilities.SpiMaster[1]: 'ISU1' is listed twice"},
      {WithCapability("Pwm", R"({"PWM-CONTROLLER-0": true})"),
       "app manifest: Capabilities.Pwm: expected an array, got object"},
      {WithCapability("Adc", R"(["-ADC"])"),
       "app manifest: Capabilities.Adc[0]: '-ADC' is not a peripheral name (1..64 letters, "
       "digits, '_', '-' or '.')"},
      // Lists of strings.
      {WithCapability("PowerControls", R"(["Reboot"])"),
       "app manifest: Capabilities.PowerControls[0]: unknown power control 'Reboot' (expected "
       "ForcePowerDown, ForceReboot or SetPowerProfile)"},
      {WithCapability("PowerControls", R"(["ForceReboot", "ForceReboot"])"),
       "app manifest: Capabilities.PowerControls[1]: 'ForceReboot' is listed twice"},
      {WithCapability("AllowedConnections", "[5]"),
       "app manifest: Capabilities.AllowedConnections[0]: expected a string, got integer"},
      {WithCapability("AllowedConnections", R"(["b\u00fccher.example"])"),
       "app manifest: Capabilities.AllowedConnections[0]: 'b\u00fccher.example' is not printable "
       "ASCII (write international names as xn--)"},
      {WithCapability("AllowedConnections", R"(["a.example\n"])"),
       "app manifest: Capabilities.AllowedConnections[0]: 'a.example\\x0a' is not printable ASCII "
       "(write international names as xn--)"},
      {WithCapability("AllowedConnections", R"(["example.com", "example.com"])"),
       "app manifest: Capabilities.AllowedConnections[1]: 'example.com' is listed twice"},
      // Booleans.
      {WithCapability("WifiConfig", R"("true")"),
       "app manifest: Capabilities.WifiConfig: expected a boolean, got string"},
      {WithCapability("HeapMemStats", "1"),
       "app manifest: Capabilities.HeapMemStats: expected a boolean, got integer"},
  });
}

TEST(AppManifestTest, RejectsDuplicateKeys) {
  auto top = ParseAppManifest(
      R"({"SchemaVersion": 1, "SchemaVersion": 1, "Name": "x",
          "ComponentId": "9ccf1aac-b73b-4aa5-a5db-628a5fdf99b9", "EntryPoint": "/bin/app",
          "Capabilities": {}})");
  ASSERT_FALSE(top);
  EXPECT_EQ(top.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(top.error().message(), "app manifest: invalid JSON: duplicate key 'SchemaVersion'");

  auto nested = ParseAppManifest(
      R"({"SchemaVersion": 1, "Name": "x", "ComponentId": "9ccf1aac-b73b-4aa5-a5db-628a5fdf99b9",
          "EntryPoint": "/bin/app", "Capabilities": {"Gpio": [8], "Gpio": [9]}})");
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().message(),
            "app manifest: invalid JSON: duplicate key 'Capabilities.Gpio'");
}

TEST(AppManifestTest, RealTimeAppsGetPeripheralsAndPartnersOnly) {
  Json rt = WithField("ApplicationType", R"("RealTimeCapable")");
  rt["Capabilities"] = Json::parse(R"({"Gpio": [8], "Uart": ["ISU0"],
      "AllowedApplicationConnections": ["005180bc-402f-4cb3-a662-72937dbcde47"]})");
  EXPECT_TRUE(ParseAppManifest(DumpJson(rt)));

  auto with = [&](std::string_view key, std::string_view raw) {
    Json j = rt;
    j["Capabilities"][std::string(key)] = Json::parse(raw);
    return j;
  };
  ExpectInvalid({
      {with("AllowedConnections", R"(["example.com"])"),
       "app manifest: Capabilities.AllowedConnections: not available to RealTimeCapable "
       "applications"},
      {with("AllowedTcpServerPorts", "[80]"),
       "app manifest: Capabilities.AllowedTcpServerPorts: not available to RealTimeCapable "
       "applications"},
      {with("DeviceAuthentication", R"("00000000-0000-0000-0000-000000000000")"),
       "app manifest: Capabilities.DeviceAuthentication: not available to RealTimeCapable "
       "applications"},
      {with("MutableStorage", R"({"SizeKB": 8})"),
       "app manifest: Capabilities.MutableStorage: not available to RealTimeCapable "
       "applications"},
      {with("PowerControls", R"(["ForceReboot"])"),
       "app manifest: Capabilities.PowerControls: not available to RealTimeCapable "
       "applications"},
      {with("WifiConfig", "true"),
       "app manifest: Capabilities.WifiConfig: not available to RealTimeCapable applications"},
  });
  // Requesting nothing is fine.
  EXPECT_TRUE(ParseAppManifest(DumpJson(with("AllowedConnections", "[]"))));
  EXPECT_TRUE(ParseAppManifest(DumpJson(with("WifiConfig", "false"))));
}

TEST(AppManifestTest, EnforcesSizeLimits) {
  std::string text = DumpJson(Base());
  std::string padded = text + std::string(64 * 1024 + 1 - text.size(), ' ');
  auto big = ParseAppManifest(padded);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(big.error().message(), "app manifest: 65537 bytes exceeds the limit of 65536 bytes");
  EXPECT_TRUE(ParseAppManifest(padded.substr(0, 64 * 1024)));

  Json many_args = Base();
  many_args["CmdArgs"] = std::vector<std::string>(257, "x");
  Error e = ParseError(many_args);
  EXPECT_EQ(e.code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(e.message(), "app manifest: CmdArgs: 257 items exceed the limit of 256");
  many_args["CmdArgs"] = std::vector<std::string>(256, "x");
  EXPECT_TRUE(ParseAppManifest(DumpJson(many_args)));

  Json long_name = WithField("Name", "\"" + std::string(1025, 'n') + "\"");
  e = ParseError(long_name);
  EXPECT_EQ(e.code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(e.message(), "app manifest: Name: 1025 bytes exceed the limit of 1024");

  Json many_gpios = Base();
  many_gpios["Capabilities"]["Gpio"] = Json::array();
  for (int i = 0; i < 300; ++i) many_gpios["Capabilities"]["Gpio"].push_back(i);
  e = ParseError(many_gpios);
  EXPECT_EQ(e.code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(e.message(), "app manifest: Capabilities.Gpio: 300 items exceed the limit of 256");

  auto custom = ParseAppManifest(DumpJson(Base()), ManifestLimits{.max_string_bytes = 4});
  ASSERT_FALSE(custom);
  EXPECT_EQ(custom.error().message(), "app manifest: ComponentId: 36 bytes exceed the limit of 4");

  Json deep = Base();
  deep["CmdArgs"] = Json::parse("[[[[[[[[[]]]]]]]]]");
  e = ParseError(deep);
  EXPECT_EQ(e.code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(e.message(), "app manifest: invalid JSON: nesting deeper than 8 levels");
}

TEST(AppManifestTest, RejectsMalformedJson) {
  for (std::string_view bad : {"", "{", "{\"SchemaVersion\": 1,}", "\"\xff\"", "nul"}) {
    auto m = ParseAppManifest(bad);
    ASSERT_FALSE(m) << bad;
    EXPECT_EQ(m.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(m.error().message().starts_with("app manifest: invalid JSON: "))
        << m.error().message();
  }
}

TEST(AppManifestTest, ParseCapabilitiesNamesItsPath) {
  auto caps = ParseCapabilities(Json::parse(R"({"Gpio": ["x"]})"), "Apps[2].Capabilities");
  ASSERT_FALSE(caps);
  EXPECT_EQ(caps.error().message(),
            "app manifest: Apps[2].Capabilities.Gpio[0]: 'x' is neither a GPIO number nor a "
            "'$NAME' constant");
  auto unknown = ParseCapabilities(Json::parse(R"({"Camera": true})"), "Apps[2].Capabilities");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().message(), "app manifest: unknown capability 'Camera'");
  auto empty = ParseCapabilities(Json::object());
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, Capabilities{});
}

TEST(AppManifestTest, CheckPeripheralRefMatchesTheParser) {
  EXPECT_TRUE(CheckPeripheralRef(PeripheralKind::kGpio, {8}));
  EXPECT_TRUE(CheckPeripheralRef(PeripheralKind::kUart, {std::string("ISU0")}));
  EXPECT_TRUE(CheckPeripheralRef(PeripheralKind::kAdc, {std::string("$ADC")}));
  EXPECT_EQ(CheckPeripheralRef(PeripheralKind::kUart, {3}).error().message(),
            "3 is not a Uart name");
  EXPECT_EQ(CheckPeripheralRef(PeripheralKind::kGpio, {std::string("ISU0")}).error().message(),
            "'ISU0' is neither a GPIO number nor a '$NAME' constant");
  EXPECT_EQ(PeripheralKindName(PeripheralKind::kI2cMaster), "I2cMaster");
  EXPECT_TRUE(IsValidConstantName("SAMPLE_LED"));
  EXPECT_TRUE(IsValidConstantName("_x1"));
  EXPECT_FALSE(IsValidConstantName("1X"));
  EXPECT_FALSE(IsValidConstantName("A-B"));
  EXPECT_FALSE(IsValidConstantName(std::string(129, 'A')));
  EXPECT_TRUE(IsValidPeripheralName("ADC-CONTROLLER-0"));
  EXPECT_FALSE(IsValidPeripheralName("$ISU0"));
}

TEST(AllowedConnectionTest, ClassifiesEntries) {
  struct Case {
    std::string entry;
    ConnectionKind kind;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"global.azure-devices-provisioning.net", ConnectionKind::kHostName},
           {"17853.live.streamtheworld.com", ConnectionKind::kHostName},
           {"httpstat.us", ConnectionKind::kHostName},
           {"localhost", ConnectionKind::kHostName},
           {"*.azure-devices.net", ConnectionKind::kWildcardHostName},
           {"*.net", ConnectionKind::kPlaceholder},
           {"a.*.net", ConnectionKind::kPlaceholder},
           {"255.255.255.255", ConnectionKind::kIpv4Address},
           {"192.168.0.2", ConnectionKind::kIpv4Address},
           {"192.168.0.256", ConnectionKind::kPlaceholder},
           {"192.168.00.2", ConnectionKind::kPlaceholder},
           {"1.2.3", ConnectionKind::kPlaceholder},
           {"fe80::1", ConnectionKind::kIpv6Address},
           {"2001:db8::8:800:200c:417a", ConnectionKind::kIpv6Address},
           {"fe80:::1", ConnectionKind::kPlaceholder},
           {"_http._tcp.home", ConnectionKind::kDnsSdService},
           {"_sample-service._tcp.local", ConnectionKind::kDnsSdService},
           {"_x._sctp.local", ConnectionKind::kPlaceholder},
           {"", ConnectionKind::kPlaceholder},
           {"CHANGE THIS", ConnectionKind::kPlaceholder},
           {"<IPERF SERVER IP ADDRESS>", ConnectionKind::kPlaceholder},
           {"REPLACE_WITH_YOUR_AZURE_IOT_HUB_OR_IOT_CENTRAL_URLS", ConnectionKind::kPlaceholder},
           {"-bad.example", ConnectionKind::kPlaceholder},
           {"bad-.example", ConnectionKind::kPlaceholder},
           {"a..example", ConnectionKind::kPlaceholder},
           {"example.com.", ConnectionKind::kPlaceholder},
           {std::string(64, 'a') + ".com", ConnectionKind::kPlaceholder},
       }) {
    EXPECT_EQ(ClassifyAllowedConnection(c.entry), c.kind) << c.entry;
  }
}

}  // namespace
}  // namespace moat::formats
