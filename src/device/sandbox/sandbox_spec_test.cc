#include "device/sandbox/sandbox_spec.h"

#include <gtest/gtest.h>

namespace moat::device::sandbox {
namespace {

SandboxSpec ValidSpec() {
  SandboxSpec spec;
  spec.instance_id = "dev1";
  spec.app_name = "hello";
  spec.executable = "/bin/hello";
  spec.args = {"--verbose"};
  spec.env = {"PATH=/bin", "LANG=C.UTF-8"};
  spec.uid = 61001;
  spec.gid = 61001;
  spec.root_image = "/var/lib/moat/apps/hello";
  spec.runtime_binds = {"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu"};
  spec.storage = MutableStorage{"/var/lib/moat/storage/hello.img", 64};
  spec.devices = {"/dev/gpiochip0"};
  return spec;
}

void ExpectInvalid(const SandboxSpec& spec, std::string_view message) {
  auto r = spec.Validate();
  ASSERT_FALSE(r) << "expected: " << message;
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(), message);
}

TEST(SandboxSpecTest, ValidSpecValidates) { EXPECT_TRUE(ValidSpec().Validate()); }

TEST(SandboxSpecTest, SpecToJsonListsEveryGrant) {
  SandboxSpec spec = ValidSpec();
  spec.limits.cpu = 1;
  spec.seccomp_class = SeccompClass::kRealTime;
  spec.hostname = "h";
  spec.stdout_path = "/var/log/moat/hello/stdout.log";
  EXPECT_EQ(
      DumpJson(SpecToJson(spec)),
      R"({"app_name":"hello","args":["--verbose"],"devices":["/dev/gpiochip0"],)"
      R"("effective_hostname":"h","env":["PATH=/bin","LANG=C.UTF-8"],"executable":"/bin/hello",)"
      R"("gid":61001,"hostname":"h","instance_id":"dev1",)"
      R"("limits":{"cpu":1,"memory_bytes":67108864,"pids_max":64},"max_open_files":256,)"
      R"("network":"none","root_image":"/var/lib/moat/apps/hello",)"
      R"("runtime_binds":["/lib64/ld-linux-x86-64.so.2","/lib/x86_64-linux-gnu"],)"
      R"("seccomp_class":"real-time","stderr_path":"",)"
      R"("stdout_path":"/var/log/moat/hello/stdout.log",)"
      R"("storage":{"image":"/var/lib/moat/storage/hello.img","mount_point":"/mnt/storage",)"
      R"("size_kb":64},"tmp_size_bytes":1048576,"uid":61001})");
  spec = ValidSpec();
  spec.storage.reset();
  Json j = SpecToJson(spec);
  EXPECT_TRUE(j["storage"].is_null());
  EXPECT_TRUE(j["limits"]["cpu"].is_null());
  EXPECT_EQ(j["effective_hostname"], "hello");
}

TEST(SandboxSpecTest, NamesAreTokens) {
  auto spec = ValidSpec();
  spec.app_name = "../etc";
  ExpectInvalid(spec,
                "sandbox spec for '?': app_name: '../etc' is not a name ([A-Za-z0-9_.-]{1,64})");
  spec = ValidSpec();
  spec.instance_id = "";
  ExpectInvalid(spec,
                "sandbox spec for 'hello': instance_id: '' is not a name ([A-Za-z0-9_.-]{1,64})");
  spec.instance_id = ".hidden";
  EXPECT_FALSE(spec.Validate());
}

TEST(SandboxSpecTest, ExecutableMustBeAbsoluteAndNormal) {
  auto spec = ValidSpec();
  for (const char* bad : {"bin/hello", "/bin/../hello", "/bin//hello", "/bin/hello/", "/", ""}) {
    spec.executable = bad;
    EXPECT_FALSE(spec.Validate()) << bad;
  }
  spec.executable = "bin/hello";
  ExpectInvalid(
      spec,
      "sandbox spec for 'hello': executable: 'bin/hello' is not an absolute, normalized file path");
}

TEST(SandboxSpecTest, NeverRoot) {
  auto spec = ValidSpec();
  spec.uid = 0;
  ExpectInvalid(spec, "sandbox spec for 'hello': uid: 0 is not an app uid (0 and -1 are refused)");
  spec = ValidSpec();
  spec.gid = static_cast<gid_t>(-1);
  ExpectInvalid(
      spec, "sandbox spec for 'hello': gid: 4294967295 is not an app gid (0 and -1 are refused)");
}

TEST(SandboxSpecTest, EnvironmentIsExplicitNameValuePairs) {
  auto spec = ValidSpec();
  spec.env = {"NOEQUALS"};
  ExpectInvalid(spec, "sandbox spec for 'hello': env[0]: is not NAME=value");
  spec.env = {"A=1", "A=2"};
  ExpectInvalid(spec, "sandbox spec for 'hello': env[1]: sets a variable twice");
  spec.env = {"1A=x"};
  EXPECT_FALSE(spec.Validate());
}

TEST(SandboxSpecTest, RuntimeBindsMustNotOverlapOrShadowSandboxPaths) {
  auto spec = ValidSpec();
  spec.runtime_binds = {"/lib", "/lib/x86_64-linux-gnu"};
  ExpectInvalid(spec,
                "sandbox spec for 'hello': runtime_binds[1]: '/lib/x86_64-linux-gnu' overlaps "
                "runtime_binds[0] '/lib'");
  spec.runtime_binds = {"/proc/self"};
  ExpectInvalid(spec,
                "sandbox spec for 'hello': runtime_binds[0]: '/proc/self' lies under /proc, which "
                "the sandbox provides");
  spec.runtime_binds = {"/"};
  EXPECT_FALSE(spec.Validate());
}

TEST(SandboxSpecTest, DevicesMustBeUnderDev) {
  auto spec = ValidSpec();
  spec.devices = {"/etc/passwd"};
  ExpectInvalid(
      spec,
      "sandbox spec for 'hello': devices[0]: '/etc/passwd' is not a normalized path under /dev/");
  spec.devices = {"/dev/null"};
  ExpectInvalid(spec, "sandbox spec for 'hello': devices[0]: '/dev/null' is always present");
}

TEST(SandboxSpecTest, LimitsHaveRanges) {
  auto spec = ValidSpec();
  spec.limits.pids_max = 1;
  ExpectInvalid(spec,
                "sandbox spec for 'hello': limits.pids_max: 1 is out of range 2..65536 (the init "
                "counts too)");
  spec = ValidSpec();
  spec.limits.memory_bytes = 1 << 20;
  spec.tmp_size_bytes = 4096;
  ExpectInvalid(
      spec, "sandbox spec for 'hello': limits.memory_bytes: 1048576 is below the minimum of 4 MiB");
  spec = ValidSpec();
  spec.tmp_size_bytes = spec.limits.memory_bytes + 1;
  EXPECT_FALSE(spec.Validate());
  spec = ValidSpec();
  spec.storage->size_kb = 10;
  ExpectInvalid(spec, "sandbox spec for 'hello': storage.size_kb: 10 is out of range 64..16777216");
}

TEST(SandboxSpecTest, HostnameDefaultsToTheAppName) {
  auto spec = ValidSpec();
  EXPECT_EQ(spec.EffectiveHostname(), "hello");
  auto other = ValidSpec();
  other.app_name = "Hello_World.app";
  EXPECT_EQ(other.EffectiveHostname(), "Hello-World.app");
  EXPECT_TRUE(other.Validate());
  spec.hostname = "bad host";
  ExpectInvalid(
      spec,
      "sandbox spec for 'hello': hostname: 'bad host' is not a hostname ([A-Za-z0-9.-]{1,64})");
}

TEST(SandboxSpecTest, DescribeListsEveryGrant) {
  std::string text = ValidSpec().Describe();
  for (const char* expected :
       {"sandbox 'hello' (moatd instance 'dev1')", "executable:      /bin/hello",
        "args:            [\"--verbose\"]", "uid/gid:         61001/61001",
        "runtime binds:   /lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu (read-only",
        "storage:         /var/lib/moat/storage/hello.img at /mnt/storage, 64 KiB",
        "devices:         /dev/null, /dev/zero, /dev/urandom, /dev/gpiochip0",
        "memory:          64 MiB", "pids:            64", "seccomp:         default",
        "network:         none (own namespace, lo only)", "hostname:        hello"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\n" << text;
  }
}

}  // namespace
}  // namespace moat::device::sandbox
