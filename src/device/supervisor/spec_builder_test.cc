// The manifest -> SandboxSpec policy, over the real Azure Sphere manifests in shared/compat and
// the test boards in tests/data/hardware.
#include "device/supervisor/spec_builder.h"

#include <map>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "device/supervisor/test_data.h"

namespace moat::device::supervisor {
namespace {

using ::testing::HasSubstr;
using namespace ::moat::device::supervisor::testing;
using sandbox::NetworkMode;
using sandbox::SandboxSpec;
using sandbox::SeccompClass;

AppInstall Install() {
  AppInstall install;
  install.instance_id = "dev1";
  install.root_image = "/var/lib/moat/images/app";
  install.storage_image = "/var/lib/moat/storage/app.img";
  install.log_dir = "/var/log/moat/app";
  install.ids = {70001, 70001};
  return install;
}

class SpecBuilderTest : public ::testing::Test {
 protected:
  formats::Board linux_board_ = LoadBoard("generic_linux_board.json");
  formats::Board rdb_board_ = LoadBoard("sample_board.json");
  DevicePolicy policy_;

  Result<SandboxSpec> Build(const formats::AppManifest& m) {
    return BuildSandboxSpec(Install(), m, linux_board_, policy_);
  }
  SandboxSpec MustBuild(const formats::AppManifest& m) {
    auto spec = Build(m);
    EXPECT_TRUE(spec) << spec.error().message();
    return spec ? *spec : SandboxSpec{};
  }
};

TEST_F(SpecBuilderTest, HelloWorldGetsItsLedsChipAndNothingElse) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  SandboxSpec spec = MustBuild(m);
  EXPECT_EQ(spec.instance_id, "dev1");
  EXPECT_EQ(spec.app_name, "1689d8b2-c835-2e27-27ad-e894d6d15fa9");
  EXPECT_EQ(spec.executable, "/bin/app");
  EXPECT_TRUE(spec.args.empty());
  EXPECT_EQ(spec.env, (std::vector<std::string>{"PATH=/usr/local/bin:/usr/bin:/bin", "TMPDIR=/tmp",
                                                "HOME=/tmp",
                                                "MOAT_COMPONENT_ID=1689d8b2-c835-2e27-27ad-"
                                                "e894d6d15fa9"}));
  EXPECT_EQ(spec.uid, 70001u);
  EXPECT_EQ(spec.gid, 70001u);
  EXPECT_EQ(spec.root_image, "/var/lib/moat/images/app");
  EXPECT_TRUE(spec.runtime_binds.empty());
  EXPECT_EQ(spec.devices, std::vector<std::filesystem::path>{"/dev/gpiochip0"});
  EXPECT_FALSE(spec.storage);
  EXPECT_EQ(spec.network, NetworkMode::kNone);
  EXPECT_EQ(spec.seccomp_class, SeccompClass::kDefault);
  EXPECT_EQ(spec.limits, sandbox::CgroupLimits{});  // the documented defaults
  EXPECT_EQ(spec.stdout_path, "/var/log/moat/app/stdout.log");
  EXPECT_EQ(spec.stderr_path, "/var/log/moat/app/stderr.log");
  EXPECT_TRUE(spec.Validate());
  // The printable value shows the grants.
  EXPECT_THAT(spec.Describe(), HasSubstr("/dev/gpiochip0"));
  EXPECT_THAT(spec.Describe(), HasSubstr("none (own namespace, lo only)"));
}

TEST_F(SpecBuilderTest, EachPeripheralKindMapsToTheBoardsDeviceNode) {
  EXPECT_EQ(MustBuild(Compat("samples__Samples_UART_UART_HighLevelApp")).devices,
            (std::vector<std::filesystem::path>{"/dev/gpiochip0", "/dev/ttyS1"}));
  EXPECT_EQ(MustBuild(Compat("samples__Samples_I2C_I2C_LSM6DS3_HighLevelApp")).devices,
            std::vector<std::filesystem::path>{"/dev/i2c-1"});
  EXPECT_EQ(MustBuild(Compat("samples__Samples_SPI_SPI_LSM6DS3_HighLevelApp")).devices,
            std::vector<std::filesystem::path>{"/dev/spidev0.0"});
  EXPECT_EQ(MustBuild(Compat("samples__Samples_ADC_ADC_HighLevelApp")).devices,
            std::vector<std::filesystem::path>{"/dev/iio:device0"});
}

TEST_F(SpecBuilderTest, SeveralGpioLinesOnOneChipBindTheChipOnce) {
  SandboxSpec spec = MustBuild(Compat("samples__Samples_MutableStorage"));
  EXPECT_EQ(spec.devices, std::vector<std::filesystem::path>{"/dev/gpiochip0"});
}

TEST_F(SpecBuilderTest, APeripheralWithoutADeviceNodeIsRefusedByName) {
  // The RDB-like board names the pins but backs none with a Linux device.
  auto spec =
      BuildSandboxSpec(Install(), Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp"),
                       rdb_board_, policy_);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(spec.error().message(),
            "app 'HelloWorld_HighLevelApp' (1689d8b2-c835-2e27-27ad-e894d6d15fa9): "
            "Capabilities.Gpio[0]: '$SAMPLE_LED' (SAMPLE_LED -> MT3620_RDB_LED1_RED -> "
            "MT3620_GPIO8) has no LinuxDevice on board 'sample_board.json', so it cannot be "
            "granted");
}

TEST_F(SpecBuilderTest, AnUnknownPeripheralIsRefusedWithTheResolversMessage) {
  auto spec = Build(Compat("gallery__HeapTracker"));
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(),
              HasSubstr("Capabilities.Gpio[0]: unknown peripheral '$MT3620_GPIO8'"));
  EXPECT_THAT(spec.error().message(),
              HasSubstr("app 'HeapTracker_HighLevelApp' (1689d8b2-c835-2e27-27ad-e894d6d15fa9): "));
}

TEST_F(SpecBuilderTest, MutableStorageBecomesAnImageOfAtLeastTheSmallestSize) {
  auto m = Compat("samples__Samples_MutableStorage");  // SizeKB 8
  SandboxSpec spec = MustBuild(m);
  ASSERT_TRUE(spec.storage);
  EXPECT_EQ(spec.storage->image, "/var/lib/moat/storage/app.img");
  EXPECT_EQ(spec.storage->size_kb, 64u);
  EXPECT_THAT(spec.env, ::testing::Contains("HOME=/mnt/storage"));

  m.capabilities.mutable_storage->size_kb = 1000;
  EXPECT_EQ(MustBuild(m).storage->size_kb, 1000u);
  EXPECT_EQ(StorageImageKb(1), 64u);
  EXPECT_EQ(StorageImageKb(64), 64u);
  EXPECT_EQ(StorageImageKb(65), 65u);
}

TEST_F(SpecBuilderTest, StorageAboveTheDevicesCapIsRefused) {
  auto m = Compat("samples__Samples_MutableStorage");
  m.capabilities.mutable_storage->size_kb = 4096;
  policy_.max_storage_kb = 1024;
  auto spec = Build(m);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(),
              HasSubstr("Capabilities.MutableStorage.SizeKB: 4096 is more than this device "
                        "grants an app (1024)"));
}

TEST_F(SpecBuilderTest, StorageWithoutAnImageInTheInstallIsAPreconditionError) {
  AppInstall install = Install();
  install.storage_image.clear();
  auto spec =
      BuildSandboxSpec(install, Compat("samples__Samples_MutableStorage"), linux_board_, policy_);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(spec.error().message(), HasSubstr("Capabilities.MutableStorage"));
}

TEST_F(SpecBuilderTest, NetworkIsConfiguredOnlyWhenTheManifestAsksForPeersOrPorts) {
  // UDP server port and a broadcast address.
  EXPECT_EQ(MustBuild(Compat("gallery__UdpDebugLog_src_SphereUdpLogSender")).network,
            NetworkMode::kConfigured);
  formats::AppManifest m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  m.capabilities.allowed_connections = {"<your_event_grid_mqtt_hostname>", "CHANGE THIS"};
  EXPECT_EQ(MustBuild(m).network, NetworkMode::kNone) << "placeholders ask for nothing";
  m.capabilities.allowed_connections.push_back("example.com");
  EXPECT_EQ(MustBuild(m).network, NetworkMode::kConfigured);
  m.capabilities.allowed_connections.clear();
  m.capabilities.allowed_tcp_server_ports = {8080};
  EXPECT_EQ(MustBuild(m).network, NetworkMode::kConfigured);
}

// A resolver over a fixed table, counting its calls.
struct FakeResolver {
  std::map<std::string, std::vector<std::string>> table;
  std::vector<std::string> asked;
  HostResolver Get() {
    return [this](std::string_view host) -> Result<std::vector<sandbox::Ipv4Address>> {
      asked.emplace_back(host);
      auto it = table.find(std::string(host));
      if (it == table.end()) return Fail(ErrorCode::kUnavailable, "NXDOMAIN");
      std::vector<sandbox::Ipv4Address> out;
      for (const auto& a : it->second) out.push_back(*sandbox::Ipv4Address::Parse(a));
      return out;
    };
  }
};

TEST(NetworkPolicyBuilderTest, PeersAreResolvedAndPortsCopied) {
  FakeResolver dns;
  dns.table["global.azure-devices-provisioning.net"] = {"198.51.100.1", "198.51.100.2"};
  dns.table["azurecattenant.deviceauthority.com"] = {"198.51.100.2"};  // a duplicate
  dns.table["stage.deviceauthority.com"] = {"203.0.113.9"};
  auto policy = BuildNetworkPolicy(Compat("gallery__EAP-TLS_Solution_EAP-TLS_Client"), dns.Get());
  ASSERT_TRUE(policy) << policy.error().message();
  ASSERT_TRUE(policy->has_value());
  EXPECT_EQ((*policy)->Describe(),
            "outbound 198.51.100.1 any port\noutbound 198.51.100.2 any port\n"
            "outbound 203.0.113.9 any port\noutbound 51.140.152.91 any port\n"
            "outbound 40.69.64.232 any port\noutbound 192.168.0.2 any port\n"
            "outbound 192.168.1.200 any port\n");
  EXPECT_EQ(dns.asked.size(), 3u);

  auto server = BuildNetworkPolicy(Compat("samples__Samples_PrivateNetworkServices"), nullptr);
  ASSERT_TRUE(server) << server.error().message();
  EXPECT_EQ((*server)->Describe(), "tcp server port 11000\n");
}

TEST(NetworkPolicyBuilderTest, NoNetworkAndPlaceholdersGiveNoPolicy) {
  FakeResolver dns;
  auto none =
      BuildNetworkPolicy(Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp"), dns.Get());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  auto placeholders = BuildNetworkPolicy(Compat("gallery__AzureEventGrid"), dns.Get());
  ASSERT_TRUE(placeholders);
  EXPECT_FALSE(placeholders->has_value());
  EXPECT_TRUE(dns.asked.empty());
  // Placeholders among real entries are skipped, never resolved.
  auto mixed = BuildNetworkPolicy(
      Compat("gallery__CO2_MonitorHealthySpaces_src"),
      FakeResolver{{{"global.azure-devices-provisioning.net", {"198.51.100.1"}}}}.Get());
  ASSERT_TRUE(mixed) << mixed.error().message();
  EXPECT_EQ((*mixed)->Describe(), "outbound 198.51.100.1 any port\n");
}

TEST(NetworkPolicyBuilderTest, WhatCannotBeEnforcedIsRefusedByEntry) {
  const std::string dnssd = "samples__Samples_DNSServiceDiscovery";
  auto refused = BuildNetworkPolicy(Compat(dnssd), nullptr);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(refused.error().message(),
              HasSubstr("Capabilities.AllowedConnections[0]: '_sample-service._tcp.local': DNS-SD "
                        "service names are not supported yet"));
  auto broadcast =
      BuildNetworkPolicy(Compat("gallery__UdpDebugLog_src_SphereUdpLogSender"), nullptr);
  ASSERT_FALSE(broadcast);
  EXPECT_THAT(broadcast.error().message(),
              HasSubstr("Capabilities.AllowedConnections[0]: '255.255.255.255': broadcast, "
                        "multicast and loopback destinations are not supported"));

  formats::AppManifest m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  m.capabilities.allowed_connections = {"CHANGE THIS", "*.example.com"};
  EXPECT_THAT(BuildNetworkPolicy(m, nullptr).error().message(),
              HasSubstr("Capabilities.AllowedConnections[1]: '*.example.com': wildcard host names "
                        "are not supported yet"));
  m.capabilities.allowed_connections = {"2001:db8::1"};
  EXPECT_THAT(BuildNetworkPolicy(m, nullptr).error().message(),
              HasSubstr("Capabilities.AllowedConnections[0]: '2001:db8::1': IPv6 destinations are "
                        "not supported yet"));

  // Host names: no resolver, a failed and an empty resolution each fail the whole policy.
  m.capabilities.allowed_connections = {"example.com"};
  auto no_resolver = BuildNetworkPolicy(m, nullptr);
  EXPECT_EQ(no_resolver.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(no_resolver.error().message(),
              HasSubstr("Capabilities.AllowedConnections[0]: 'example.com' is a host name and no "
                        "resolver was given"));
  FakeResolver dns;
  auto failed = BuildNetworkPolicy(m, dns.Get());
  EXPECT_EQ(failed.error().code(), ErrorCode::kUnavailable);
  EXPECT_THAT(failed.error().message(),
              HasSubstr("Capabilities.AllowedConnections[0]: resolving 'example.com': NXDOMAIN"));
  dns.table["example.com"] = {};
  EXPECT_THAT(BuildNetworkPolicy(m, dns.Get()).error().message(),
              HasSubstr("'example.com' resolves to no IPv4 address"));
}

TEST(NetworkPolicyBuilderTest, EveryCompatManifestGetsAPolicyOrIsRefusedByEntry) {
  HostResolver any = [](std::string_view) -> Result<std::vector<sandbox::Ipv4Address>> {
    return std::vector<sandbox::Ipv4Address>{*sandbox::Ipv4Address::Parse("192.0.2.1")};
  };
  int none = 0, policies = 0;
  std::map<std::string, int> refused;
  for (const CompatManifest& c : CompatManifests()) {
    auto policy = BuildNetworkPolicy(c.manifest, any);
    if (!policy) {
      const std::string& message = policy.error().message();
      refused[message.substr(message.find("': ") + 3)]++;
    } else if (policy->has_value()) {
      ++policies;
    } else {
      ++none;
    }
  }
  EXPECT_EQ(policies, 17);
  EXPECT_EQ(none, 52);  // placeholders only count here
  EXPECT_EQ(refused, (std::map<std::string, int>{
                         {"DNS-SD service names are not supported yet", 2},
                         {"broadcast, multicast and loopback destinations are not supported", 2},
                     }));
}

TEST_F(SpecBuilderTest, CmdArgsBecomeArguments) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  m.cmd_args = {"--mode", "a b"};
  m.entry_point = "/usr/bin/hello";
  SandboxSpec spec = MustBuild(m);
  EXPECT_EQ(spec.executable, "/usr/bin/hello");
  EXPECT_EQ(spec.args, (std::vector<std::string>{"--mode", "a b"}));
}

TEST_F(SpecBuilderTest, TheDevicePolicySetsLimitsPerAppAndTheAppCannot) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  policy_.memory_bytes = 32 << 20;
  policy_.pids_max = 20;
  EXPECT_EQ(MustBuild(m).limits, (sandbox::CgroupLimits{32 << 20, 20, std::nullopt}));
  policy_.per_app[m.component_id] = {
      .memory_bytes = 128 << 20, .pids_max = std::nullopt, .max_open_files = 1024};
  SandboxSpec spec = MustBuild(m);
  EXPECT_EQ(spec.limits, (sandbox::CgroupLimits{128 << 20, 20, std::nullopt}));
  EXPECT_EQ(spec.max_open_files, 1024u);
  // Another app's override does not apply.
  auto other = Compat("samples__Samples_UART_UART_HighLevelApp");
  EXPECT_EQ(MustBuild(other).limits.memory_bytes, 32u << 20);
}

TEST_F(SpecBuilderTest, AnOverrideTheSandboxCannotHonourIsRefused) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  policy_.per_app[m.component_id].memory_bytes = 1 << 20;
  auto spec = Build(m);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), HasSubstr("limits.memory_bytes"));
}

TEST_F(SpecBuilderTest, ARealTimeAppGetsTheStricterClassAndThePinnedCpu) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_RTApp_MT3620_BareMetal");
  auto refused = Build(m);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(refused.error().message(), HasSubstr("reserves no CPU for real-time apps"));

  policy_.realtime_cpu = 1;
  SandboxSpec spec = MustBuild(m);
  EXPECT_EQ(spec.seccomp_class, SeccompClass::kRealTime);
  EXPECT_EQ(spec.limits.cpu, 1u);
  EXPECT_EQ(spec.network, NetworkMode::kNone);
  EXPECT_FALSE(spec.storage);
  EXPECT_THAT(spec.Describe(), HasSubstr("pinned to 1"));
}

TEST_F(SpecBuilderTest, ARealTimeManifestBuiltInCodeCannotSneakInNetwork) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_RTApp_MT3620_BareMetal");
  m.capabilities.allowed_tcp_server_ports = {80};
  policy_.realtime_cpu = 0;
  auto spec = Build(m);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), HasSubstr("cannot have network or storage"));
}

TEST_F(SpecBuilderTest, EventsDeferralAndAppConnectionsBecomeAppServices) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  EXPECT_EQ(BuildAppServices(m), AppServices{});
  const auto peer = *formats::Guid::Parse("ae4714aa-03aa-492b-9663-962f966a9cc3");
  const auto other = *formats::Guid::Parse("0e4714aa-03aa-492b-9663-962f966a9cc3");
  m.capabilities.system_event_notifications = true;
  m.capabilities.software_update_deferral = true;
  m.capabilities.allowed_application_connections = {peer, other, peer, m.component_id};
  ASSERT_TRUE(Build(m)) << "granted, no longer refused";
  AppServices services = BuildAppServices(m);
  EXPECT_TRUE(services.system_events);
  EXPECT_TRUE(services.update_deferral);
  EXPECT_EQ(services.connections, (std::vector<formats::Guid>{other, peer}));
  EXPECT_EQ(services.device_authentication, std::nullopt);
}

TEST_F(SpecBuilderTest, DeviceAuthenticationNamingATenantBecomesAnAppService) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  const auto tenant = *formats::Guid::Parse("7d3a1c2e-1111-4222-8333-444455556666");
  m.capabilities.device_authentication = formats::DeviceAuthentication{tenant, ""};
  ASSERT_TRUE(Build(m)) << "granted, no longer refused";
  EXPECT_EQ(BuildAppServices(m).device_authentication, tenant);
  // The nil GUID ("the current tenant" on Azure Sphere) and a placeholder grant nothing: the
  // manifest must name the tenant.
  m.capabilities.device_authentication = formats::DeviceAuthentication{formats::Guid{}, ""};
  ASSERT_TRUE(Build(m));
  EXPECT_EQ(BuildAppServices(m).device_authentication, std::nullopt);
  m.capabilities.device_authentication =
      formats::DeviceAuthentication{std::nullopt, "REPLACE_WITH_YOUR_AZURE_SPHERE_TENANT_ID"};
  ASSERT_TRUE(Build(m));
  EXPECT_EQ(BuildAppServices(m).device_authentication, std::nullopt);
}

TEST_F(SpecBuilderTest, EachUnsupportedCapabilityIsRefusedByName) {
  auto base = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  std::vector<std::pair<std::string, std::function<void(formats::Capabilities&)>>> cases = {
      {"NetworkConfig", [](auto& c) { c.network_config = true; }},
      {"WifiConfig", [](auto& c) { c.wifi_config = true; }},
      {"EnterpriseWifiConfig", [](auto& c) { c.enterprise_wifi_config = true; }},
      {"CertStore", [](auto& c) { c.cert_store = true; }},
      {"SntpService", [](auto& c) { c.sntp_service = true; }},
      {"DhcpService", [](auto& c) { c.dhcp_service = true; }},
      {"TimeSyncConfig", [](auto& c) { c.time_sync_config = true; }},
      {"SystemTime", [](auto& c) { c.system_time = true; }},
      {"ReadNetworkProxyConfig", [](auto& c) { c.read_network_proxy_config = true; }},
      {"HeapMemStats", [](auto& c) { c.heap_mem_stats = true; }},
      {"PowerControls", [](auto& c) { c.power_controls = {"ForceReboot"}; }},
  };
  for (const auto& [field, set] : cases) {
    formats::AppManifest m = base;
    set(m.capabilities);
    auto spec = Build(m);
    ASSERT_FALSE(spec) << field;
    EXPECT_EQ(spec.error().code(), ErrorCode::kInvalidArgument) << field;
    EXPECT_THAT(spec.error().message(),
                HasSubstr("(1689d8b2-c835-2e27-27ad-e894d6d15fa9): Capabilities." + field + ": "))
        << field;
  }
  // A DeviceAuthentication placeholder (an unedited sample) asks for nothing.
  formats::AppManifest m = base;
  m.capabilities.device_authentication =
      formats::DeviceAuthentication{std::nullopt, "REPLACE_WITH_YOUR_AZURE_SPHERE_TENANT_ID"};
  EXPECT_TRUE(Build(m));
}

TEST_F(SpecBuilderTest, IdentityComesFromTheInstallAndIsChecked) {
  auto m = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  AppInstall install = Install();
  install.ids = {0, 0};
  auto spec = BuildSandboxSpec(install, m, linux_board_, policy_);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), HasSubstr("uid: 0 is not an app uid"));
  install = Install();
  install.root_image = "relative/image";
  EXPECT_THAT(BuildSandboxSpec(install, m, linux_board_, policy_).error().message(),
              HasSubstr("root_image"));
}

TEST_F(SpecBuilderTest, TheSpecIsAPureFunctionOfItsInputs) {
  auto m = Compat("samples__Samples_UART_UART_HighLevelApp");
  EXPECT_EQ(MustBuild(m), MustBuild(m));
  EXPECT_EQ(MustBuild(m).Describe(), MustBuild(m).Describe());
}

// Every compat manifest either builds a valid spec on the generic Linux board or is refused
// for a reason that names a manifest field; the sets are pinned so a policy change shows here.
TEST_F(SpecBuilderTest, EveryCompatManifestBuildsOrIsRefusedByField) {
  policy_.realtime_cpu = 1;
  auto manifests = CompatManifests();
  ASSERT_EQ(manifests.size(), 73u);
  std::map<std::string, std::string> refused;
  int built = 0;
  for (const CompatManifest& c : manifests) {
    auto spec = Build(c.manifest);
    if (spec) {
      ++built;
      EXPECT_TRUE(spec->Validate()) << c.file;
      EXPECT_EQ(spec->app_name, c.manifest.component_id.ToString());
      // Deny by default: no network unless asked, no storage unless asked.
      EXPECT_EQ(spec->storage.has_value(), c.manifest.capabilities.mutable_storage.has_value())
          << c.file;
      continue;
    }
    EXPECT_THAT(spec.error().message(), HasSubstr("Capabilities.")) << c.file;
    // The field: "Capabilities.X" up to the next ':' or '['.
    const std::string& msg = spec.error().message();
    size_t at = msg.find("Capabilities.");
    refused[c.file] = msg.substr(at, msg.find_first_of(":[", at) - at);
  }
  EXPECT_EQ(built, 35);
  std::map<std::string, int> by_field;
  for (const auto& [file, field] : refused) ++by_field[field];
  // Peripherals: other boards' constants, or (Pwm) nothing on this board backs them with a
  // device node. The rest: services Moat does not offer apps yet.
  EXPECT_EQ(by_field, (std::map<std::string, int>{
                          {"Capabilities.Gpio", 14},
                          {"Capabilities.I2cMaster", 1},
                          {"Capabilities.NetworkConfig", 8},
                          {"Capabilities.PowerControls", 1},
                          {"Capabilities.Pwm", 1},
                          {"Capabilities.ReadNetworkProxyConfig", 3},
                          {"Capabilities.SpiMaster", 1},
                          {"Capabilities.SystemTime", 2},
                          {"Capabilities.Uart", 2},
                          {"Capabilities.WifiConfig", 5},
                      }));
  // DeviceAuthentication is granted now (an app service): the Azure IoT sample builds.
  EXPECT_EQ(refused.count("samples__Samples_AzureIoT_app_manifest.json"), 0u);
  EXPECT_EQ(refused["samples__Samples_PWM_PWM_HighLevelApp_app_manifest.json"], "Capabilities.Pwm");
}

}  // namespace
}  // namespace moat::device::supervisor
