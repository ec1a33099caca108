#include "device/agent/config.h"
#include "device/agent/instance.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file.h"

namespace moat::device::agent {
namespace {

using ::testing::HasSubstr;

TEST(ConfigTest, MinimalConfigGetsDefaultsAndResolvesRelativePaths) {
  auto c = ParseConfig(
      R"({"service_url":"https://127.0.0.1:8443","service_root_certificate":"root.pem",
          "state_dir":"state"})",
      "/etc/moat");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->service_root_certificate, "/etc/moat/root.pem");
  EXPECT_EQ(c->state_dir, "/etc/moat/state");
  EXPECT_EQ(c->key_store_path, "/etc/moat/state/keys");
  EXPECT_EQ(c->control_socket, "/etc/moat/state/moatctl.sock");
  EXPECT_EQ(c->key_store_backend, "software");
  EXPECT_DOUBLE_EQ(c->attestation.renew_at, 0.8);
  EXPECT_FALSE(c->os_version.empty());
}

TEST(ConfigTest, FullConfig) {
  auto c = ParseConfig(
      R"({"service_url":"https://moat.example:8443","service_root_certificate":"/r.pem",
          "state_dir":"/var/lib/moat","key_store":{"backend":"software","path":"/k"},
          "os":{"name":"moat-linux","version":"2.0","image":"/boot/os.img"},
          "control_socket":"/run/moat.sock",
          "attestation":{"renew_at":0.5,"jitter":0.05,"retry_initial_seconds":2,
                         "retry_max_seconds":60}})",
      "/");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->os_name, "moat-linux");
  EXPECT_EQ(c->os_version, "2.0");
  EXPECT_EQ(c->os_image, "/boot/os.img");
  EXPECT_EQ(c->key_store_path, "/k");
  EXPECT_EQ(c->attestation.retry_max, std::chrono::seconds(60));
}

TEST(ConfigTest, KeyStoreBackends) {
  auto tpm = ParseConfig(
      R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"/s",
          "key_store":{"backend":"tpm2","path":"/t","tcti":"swtpm:host=127.0.0.1,port=2321",
                       "srk_handle":"0x81000002","ek_handle":2164326401,"moat_pcr":23}})",
      "/");
  ASSERT_TRUE(tpm.has_value()) << tpm.error().message();
  EXPECT_EQ(tpm->key_store_backend, "tpm2");
  EXPECT_EQ(tpm->key_store_path, "/t");
  EXPECT_EQ(tpm->key_store_tpm2.tcti, "swtpm:host=127.0.0.1,port=2321");
  EXPECT_EQ(tpm->key_store_tpm2.srk_handle, 0x81000002u);
  EXPECT_EQ(tpm->key_store_tpm2.ek_handle, 0x81010001u);
  EXPECT_EQ(tpm->key_store_tpm2.moat_pcr, 23u);
  EXPECT_EQ(tpm->key_store_tpm2.ek_certificate_nv_index, 0x01c00002u);
  auto p11 = ParseConfig(
      R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"/s",
          "key_store":{"backend":"pkcs11","module":"/m.so","token":"moat","pin_env":"PIN"}})",
      "/");
  ASSERT_TRUE(p11.has_value()) << p11.error().message();
  EXPECT_EQ(p11->key_store_pkcs11.module, "/m.so");
  EXPECT_EQ(p11->key_store_pkcs11.token_label, "moat");
  EXPECT_EQ(p11->key_store_pkcs11.pin_env, "PIN");
}

TEST(ConfigTest, BadConfigsNameTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"service_url":"http://x","service_root_certificate":"r","state_dir":"s"})", "https://"},
      {R"({"service_root_certificate":"r","state_dir":"s"})", "service_url"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s","x":1})",
       "unknown field 'x'"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s",
           "key_store":{"backend":"hsm"}})",
       "not one of software, tpm2, pkcs11"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s",
           "key_store":{"backend":"tpm2","srk_handle":"0x1xyz"}})",
       "srk_handle"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s",
           "key_store":{"backend":"pkcs11","module":"/m.so","token":"moat"}})",
       "exactly one of pin_file, pin_env"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s",
           "attestation":{"renew_at":1.5}})",
       "renew_at"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s",
           "attestation":{"retry_initial_seconds":100,"retry_max_seconds":10}})",
       "retry_max_seconds"},
      {"[", "config"},
  };
  for (const auto& [text, expected] : cases) {
    auto c = ParseConfig(text, "/");
    ASSERT_FALSE(c.has_value()) << text;
    EXPECT_THAT(c.error().message(), HasSubstr(expected)) << text;
  }
}

TEST(ConfigTest, UpdateAndSupervisorSections) {
  auto c = ParseConfig(
      R"({"service_url":"https://moat.example:8443","service_root_certificate":"/r.pem",
          "state_dir":"/var/lib/moat",
          "update":{"interval_hours":6,"jitter":0.2,"window":"23:00-01:30",
                    "max_deferral_hours":48,"rollback_window_minutes":30},
          "supervisor":{"board":"board.json","crash_loop_crashes":3,
                        "crash_loop_window_seconds":120}})",
      "/etc/moat");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->update.interval, std::chrono::hours(6));
  EXPECT_DOUBLE_EQ(c->update.jitter, 0.2);
  EXPECT_EQ(c->update.window, "23:00-01:30");
  EXPECT_EQ(c->update.max_deferral, std::chrono::hours(48));
  EXPECT_EQ(c->update.rollback_window, std::chrono::minutes(30));
  EXPECT_EQ(c->supervisor.board, "/etc/moat/board.json");
  EXPECT_EQ(c->supervisor.crash_loop_crashes, 3u);
  EXPECT_EQ(c->supervisor.crash_loop_window, std::chrono::seconds(120));

  auto defaults = ParseConfig(
      R"({"service_url":"https://m:1","service_root_certificate":"/r","state_dir":"/s"})", "/");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->update.interval, std::chrono::hours(20));
  EXPECT_TRUE(defaults->update.window.empty());
  EXPECT_EQ(defaults->supervisor.crash_loop_crashes, 5u);

  auto bad = ParseConfig(
      R"({"service_url":"https://m:1","service_root_certificate":"/r","state_dir":"/s",
          "update":{"window":"2am-4am"}})",
      "/");
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad.error().message(), HasSubstr("config.update.window"));
  bad = ParseConfig(
      R"({"service_url":"https://m:1","service_root_certificate":"/r","state_dir":"/s",
          "supervisor":{"crash_loop_crashes":0}})",
      "/");
  ASSERT_FALSE(bad);
}

TEST(ConfigTest, InstanceDefaultsToOnePerStateDirectory) {
  auto parse = [](std::string_view state, std::string_view supervisor = "{}") {
    return ParseConfig(fmt::format(R"({{"service_url":"https://m:1","service_root_certificate":"/r",
                                       "state_dir":"{}","supervisor":{}}})",
                                   state, supervisor),
                       "/etc/moat");
  };
  auto a = parse("/var/lib/moat-a"), b = parse("/var/lib/moat-b"), a2 = parse("/var/lib/./moat-a");
  ASSERT_TRUE(a && b && a2);
  EXPECT_THAT(a->supervisor.instance_id, ::testing::MatchesRegex("m[0-9a-f]{10}"));
  EXPECT_NE(a->supervisor.instance_id, b->supervisor.instance_id);
  EXPECT_EQ(a->supervisor.instance_id, a2->supervisor.instance_id);  // the same directory
  EXPECT_EQ(a->supervisor.instance_id, DefaultInstanceId("/var/lib/moat-a"));
  EXPECT_EQ(a->supervisor.run_dir, "/run/moat");
  EXPECT_TRUE(a->supervisor.network_pool.empty());

  auto c = parse("/s", R"({"instance_id":"dev-1","run_dir":"run","network_pool":"10.99.0.0/24"})");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->supervisor.instance_id, "dev-1");
  EXPECT_EQ(c->supervisor.run_dir, "/etc/moat/run");
  EXPECT_EQ(c->supervisor.network_pool, "10.99.0.0/24");

  for (const auto& [supervisor, expected] : std::vector<std::pair<std::string, std::string>>{
           {R"({"instance_id":"a/b"})", "config.supervisor.instance_id: 'a/b' is not a name"},
           {R"({"network_pool":"10.99.0.1/24"})", "config.supervisor.network_pool"},
           {R"({"network_pool":"10.99.0.0/31"})", "holds no /30 link"}}) {
    auto bad = parse("/s", supervisor);
    ASSERT_FALSE(bad) << supervisor;
    EXPECT_THAT(bad.error().message(), HasSubstr(expected)) << supervisor;
  }
}

// Two instances never share a slot (so neither a network pool nor a uid range); an instance keeps
// its slot across restarts and cannot be claimed twice at once.
TEST(InstanceTest, SlotsAreExclusiveAndStable) {
  auto dir = TempDir::Create("moat-instance");
  ASSERT_TRUE(dir);
  auto config = [&](std::string_view name) {
    Config c;
    c.state_dir = dir->path() / name;
    EXPECT_TRUE(MakeDirectories(c.state_dir, 0700));
    c.supervisor.instance_id = std::string(name);
    c.supervisor.run_dir = dir->path() / "run";
    return c;
  };
  const Config a = config("a"), b = config("b");
  std::optional<InstanceClaim> first;
  {
    auto claim = ClaimInstance(a);
    ASSERT_TRUE(claim) << claim.error().message();
    first = std::move(*claim);
  }
  auto again = ClaimInstance(a);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(again.error().message(), HasSubstr("another moatd runs as instance 'a'"));
  auto other = ClaimInstance(b);
  ASSERT_TRUE(other) << other.error().message();
  EXPECT_NE(other->slot, first->slot);
  EXPECT_NE(other->network_pool.ToString(), first->network_pool.ToString());
  EXPECT_NE(other->ids.first, first->ids.first);
  EXPECT_EQ(first->network_pool.ToString(), fmt::format("10.213.{}.0/22", 4 * first->slot));
  EXPECT_EQ(first->ids.first, 70000u + 1000u * first->slot);
  // Released (moatd stopped or died): claimed again, in the same slot.
  const uint32_t slot = first->slot;
  first.reset();
  auto restarted = ClaimInstance(a);
  ASSERT_TRUE(restarted) << restarted.error().message();
  EXPECT_EQ(restarted->slot, slot);
  // A configured pool wins over the slot's.
  Config c = config("c");
  c.supervisor.network_pool = "10.99.0.0/24";
  auto pooled = ClaimInstance(c);
  ASSERT_TRUE(pooled);
  EXPECT_EQ(pooled->network_pool.ToString(), "10.99.0.0/24");
}

}  // namespace
}  // namespace moat::device::agent
