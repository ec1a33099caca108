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

TEST(ConfigTest, BadConfigsNameTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"service_url":"http://x","service_root_certificate":"r","state_dir":"s"})", "https://"},
      {R"({"service_root_certificate":"r","state_dir":"s"})", "service_url"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s","x":1})",
       "unknown field 'x'"},
      {R"({"service_url":"https://x","service_root_certificate":"r","state_dir":"s",
           "key_store":{"backend":"tpm2"}})",
       "not available"},
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

}  // namespace
}  // namespace moat::device::agent
