#include "device/agent/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace moat::device::agent
