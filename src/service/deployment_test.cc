// Deployments as TUF repositories against a real moat-service: real TLS on loopback, SQLite in a
// temporary data directory, operators made through the API, devices played by keys made here and
// certified by a real attestation, image packages built and signed here. What devices fetch is
// checked with formats::tuf alone (parse, threshold-verify, hash-chain), never with the device's
// own update client. The clock is a FakeClock (started at the real time so TLS accepts what the
// service issues); housekeeping runs when a test asks, after moving it.
#include "service/deployment_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/random.h"
#include "crypto/digest.h"
#include "crypto/x509.h"
#include "formats/attestation.h"
#include "formats/image_package.h"
#include "formats/operator_config.h"
#include "formats/tuf.h"
#include "net/https_client.h"
#include "service/service.h"

namespace moat::service {
namespace {

namespace tuf = formats::tuf;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr std::string_view kAppComponent = "6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10";
constexpr std::string_view kOtherAppComponent = "2b0f8a71-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
constexpr std::string_view kOsComponent = "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4";

Json Parse(const net::HttpResponse& r) {
  auto j = ParseJson(r.body, "response");
  EXPECT_TRUE(j.has_value()) << r.body;
  return j ? *j : Json();
}

std::string Detail(const net::HttpResponse& r) { return Parse(r).value("detail", ""); }

std::string AsString(std::span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::string Package(const crypto::PrivateKey& key, std::string_view component,
                    std::string_view version,
                    formats::ImageType type = formats::ImageType::kApplication) {
  formats::ImagePackageHeader h;
  h.image_type = type;
  h.component_id = *formats::Guid::Parse(component);
  h.image_id = *formats::Guid::Parse("0d9a3a47-51c2-4f4e-8a10-7cc1d3b4e5f6");
  h.version = std::string(version);
  h.name = type == formats::ImageType::kOs ? "moat-linux" : "HelloMoat";
  h.created = std::chrono::system_clock::now();
  const std::string manifest =
      type == formats::ImageType::kOs
          ? "{}"
          : fmt::format(R"({{"SchemaVersion":1,"Name":"HelloMoat","ComponentId":"{}",)"
                        R"("EntryPoint":"/bin/hello","CmdArgs":[],"Capabilities":{{}},)"
                        R"("ApplicationType":"Default"}})",
                        component);
  formats::FileTreeEntry bin{
      .kind = formats::FileTreeEntry::Kind::kDirectory, .path = "bin", .mode = 0755};
  std::string program = fmt::format("program {} {}", component, version);
  formats::FileTreeEntry hello{.kind = formats::FileTreeEntry::Kind::kFile,
                               .path = "bin/hello",
                               .mode = 0755,
                               .data = std::vector<uint8_t>(program.begin(), program.end())};
  std::vector<formats::FileTreeEntry> files = {bin, hello};
  auto pkg = formats::BuildImagePackage(h, manifest, files, key);
  EXPECT_TRUE(pkg.has_value()) << pkg.error().message();
  return pkg ? AsString(*pkg) : std::string();
}

// A device: its identity key and its TLS key.
struct Device {
  crypto::PrivateKey identity = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  crypto::PrivateKey tls_key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  std::string id = identity.public_key().FingerprintHex();
  std::vector<crypto::Certificate> client_chain;  // after EnrolledDevice
};

class DeploymentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("moat-deployment");
    ASSERT_TRUE(dir.has_value());
    dir_.emplace(std::move(*dir));
    data_dir_ = dir_->path() / "data";
    InitOptions init{.data_dir = data_dir_, .port = 0};
    std::ostringstream progress;
    auto made = InitDataDir(init, clock_, random_, progress);
    ASSERT_TRUE(made.has_value()) << made.error().message();
    StartService();
    auto text = ReadFile(data_dir_ / "admin.moat.json", 1 << 20);
    ASSERT_TRUE(text.has_value());
    auto config = formats::ParseOperatorConfig(*text);
    ASSERT_TRUE(config.has_value());
    admin_config_ = *config;
    root_ = *crypto::Certificate::FromPem(config->root_certificate_pem);
    admin_ = Client(config->certificate_pem, config->private_key_pem);

    ASSERT_EQ(Send(*admin_, "POST", "/api/v1/tenants", R"({"name":"acme"})").status, 201);
    ASSERT_EQ(Send(*admin_, "POST", "/api/v1/tenants", R"({"name":"globex"})").status, 201);
    reader_ = MakeOperator("rita", "acme", "Reader");
    contributor_ = MakeOperator("carl", "acme", "Contributor");
    acme_admin_ = MakeOperator("ada", "acme", "Administrator");
    globex_admin_ = MakeOperator("gus", "globex", "Administrator");
    ASSERT_EQ(
        Send(*contributor_, "POST", "/api/v1/tenants/acme/products", R"({"name":"Thermo"})").status,
        201);
    Json os = {{"kind", "os"},
               {"name", "moat-linux"},
               {"sha256", HexEncode(crypto::Sha256("os image 1.0"))}};
    ASSERT_EQ(Send(*acme_admin_, "POST", "/api/v1/tenants/acme/reference-values", os.dump()).status,
              201);
    Json key = {{"public_key", signing_key_.public_key().ToPem()}, {"name", "release"}};
    ASSERT_EQ(
        Send(*acme_admin_, "POST", "/api/v1/tenants/acme/image-signing-keys", key.dump()).status,
        201);
  }

  void StartService() {
    auto service =
        Service::Start({.data_dir = data_dir_, .port = 0, .threads = 2}, clock_, random_);
    ASSERT_TRUE(service.has_value()) << service.error().message();
    service_ = std::move(*service);
  }

  std::string BaseUrl() const { return fmt::format("https://127.0.0.1:{}", service_->port()); }

  std::unique_ptr<net::HttpsClient> Connect(const crypto::Certificate& cert,
                                            const crypto::PrivateKey& key,
                                            std::vector<crypto::Certificate> chain = {}) {
    net::HttpsClientConfig config{.base_url = BaseUrl()};
    config.tls.server_roots = {*root_};
    config.tls.certificate = cert;
    config.tls.chain = std::move(chain);
    config.tls.key = key;
    auto client = net::HttpsClient::Create(config);
    EXPECT_TRUE(client.has_value()) << client.error().message();
    return std::move(*client);
  }

  std::unique_ptr<net::HttpsClient> Client(const std::string& chain_pem,
                                           const std::string& key_pem) {
    auto chain = crypto::Certificate::ParsePemChain(chain_pem);
    EXPECT_TRUE(chain.has_value());
    return Connect(chain->front(), *crypto::PrivateKey::FromPem(key_pem),
                   std::vector<crypto::Certificate>(chain->begin() + 1, chain->end()));
  }

  std::unique_ptr<net::HttpsClient> MakeOperator(std::string_view name, std::string_view tenant,
                                                 std::string_view role) {
    auto key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
    auto csr = crypto::CertificateRequest::Create(*key, name);
    Json body = {{"name", name}, {"tenant", tenant}, {"role", role}, {"csr", csr->ToPem()}};
    auto r = Send(*admin_, "POST", "/api/v1/users", body.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    auto pem = key->ToPem();
    return Client(Parse(r)["certificate"].get<std::string>(), std::string(pem->view()));
  }

  net::HttpResponse Send(net::HttpsClient& c, std::string_view method, std::string_view path,
                         std::string_view body = {},
                         std::string_view content_type = "application/json") {
    auto r = c.Send(method, path, body, content_type);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return r ? *r : net::HttpResponse{};
  }

  // Adds a package to `tenant` (acme's Contributor, or globex's Administrator) and returns its ID.
  std::string AddImage(const std::string& package, bool globex = false) {
    auto r = Send(globex ? *globex_admin_ : *contributor_, "POST",
                  fmt::format("/api/v1/tenants/{}/images", globex ? "globex" : "acme"), package,
                  "application/octet-stream");
    EXPECT_EQ(r.status, 201) << r.body;
    return Parse(r).value("id", "");
  }

  std::string GroupId(std::string_view group) {
    auto r = Send(*reader_, "GET",
                  "/api/v1/tenants/acme/products/Thermo/device-groups/" +
                      (group == "Field Test" ? std::string("Field%20Test") : std::string(group)));
    EXPECT_EQ(r.status, 200) << r.body;
    return Parse(r).value("id", "");
  }

  // A device of acme, attested (client certificate), in Thermo/`group` unless empty.
  std::unique_ptr<net::HttpsClient> EnrolledDevice(Device& d, std::string_view group) {
    Json key = {{"public_key", d.identity.public_key().ToPem()}};
    EXPECT_EQ(Send(*admin_, "POST", "/api/v1/devices", key.dump()).status, 201);
    EXPECT_EQ(
        Send(*admin_, "POST", fmt::format("/api/v1/tenants/acme/devices/{}/claim", d.id)).status,
        200);
    if (!group.empty()) {
      Json move = {{"device_group", "Thermo/" + std::string(group)}};
      EXPECT_EQ(
          Send(*contributor_, "PATCH", "/api/v1/tenants/acme/devices/" + d.id, move.dump()).status,
          200);
    }
    auto boot = Bootstrap(d);
    auto challenge = Send(*boot, "POST", "/device/v1/attestation/challenge");
    auto nonce = Base64Decode(Parse(challenge).value("nonce", ""), Base64Alphabet::kUrl,
                              Base64Padding::kWithout);
    formats::MeasurementLog log{{{.pcr = formats::kMoatPcr,
                                  .kind = formats::MeasurementKind::kOs,
                                  .name = "moat-linux",
                                  .version = "1.0",
                                  .digest = crypto::Sha256("os image 1.0")}}};
    formats::AttestationEvidence e{
        .device_id = d.id, .nonce = *nonce, .log = log, .os_version = "1.0"};
    e.signature = *d.identity.Sign(formats::AttestationSigningInput(e));
    auto csr = crypto::CertificateRequest::Create(d.tls_key, d.id);
    Json body = {{"evidence", formats::ToJson(e)}, {"csr", csr->ToPem()}};
    auto attested = Send(*boot, "POST", "/device/v1/attestation", body.dump());
    EXPECT_EQ(attested.status, 200) << attested.body;
    auto chain = crypto::Certificate::ParsePemChain(
        Parse(attested)["client_certificate"].get<std::string>());
    EXPECT_TRUE(chain.has_value());
    d.client_chain = *chain;
    return Connect(chain->at(0), d.tls_key, {chain->at(1)});
  }

  std::unique_ptr<net::HttpsClient> Bootstrap(const Device& d) {
    auto now = std::chrono::system_clock::now();
    auto cert = crypto::SelfCertifiedDeviceCertificate(d.identity, now - 1h, now + 1h);
    EXPECT_TRUE(cert.has_value());
    return Connect(*cert, d.identity);
  }

  // A repository file as the device gets it; fails the test unless 200.
  std::string Fetch(net::HttpsClient& device, const std::string& group_id,
                    const std::string& path) {
    auto r = Send(device, "GET", fmt::format("/device/v1/repo/{}/{}", group_id, path));
    EXPECT_EQ(r.status, 200) << path << ": " << r.body;
    return r.body;
  }

  // The current top-level metadata, each verified with `root` and hash-chained from the
  // timestamp, the way a TUF client would.
  struct Verified {
    tuf::Timestamp timestamp;
    tuf::Snapshot snapshot;
    tuf::Targets targets;
  };
  Verified FetchVerified(net::HttpsClient& device, const std::string& group_id,
                         const tuf::Root& root) {
    Verified v;
    auto ts = tuf::ParseTimestamp(Fetch(device, group_id, "timestamp.json"));
    EXPECT_TRUE(ts) << ts.error().message();
    if (!ts) return v;
    EXPECT_TRUE(tuf::VerifyRole(ts->envelope, root, tuf::Role::kTimestamp, "timestamp"));
    v.timestamp = ts->signed_;
    const std::string snap_bytes =
        Fetch(device, group_id,
              tuf::MetadataPath(tuf::Role::kSnapshot, v.timestamp.snapshot.version, true));
    EXPECT_EQ(tuf::DescribeMetaFile(snap_bytes, v.timestamp.snapshot.version),
              v.timestamp.snapshot);
    auto snap = tuf::ParseSnapshot(snap_bytes);
    EXPECT_TRUE(snap);
    if (!snap) return v;
    EXPECT_TRUE(tuf::VerifyRole(snap->envelope, root, tuf::Role::kSnapshot, "snapshot"));
    v.snapshot = snap->signed_;
    const std::string targets_bytes = Fetch(
        device, group_id, tuf::MetadataPath(tuf::Role::kTargets, v.snapshot.targets.version, true));
    EXPECT_EQ(tuf::DescribeMetaFile(targets_bytes, v.snapshot.targets.version), v.snapshot.targets);
    auto targets = tuf::ParseTargets(targets_bytes);
    EXPECT_TRUE(targets);
    if (!targets) return v;
    EXPECT_TRUE(tuf::VerifyRole(targets->envelope, root, tuf::Role::kTargets, "targets"));
    v.targets = targets->signed_;
    return v;
  }

  tuf::Root TrustedRoot(net::HttpsClient& device, const std::string& group_id, int version = 1) {
    auto root = tuf::ParseRoot(Fetch(device, group_id, tuf::RootPath(version)));
    EXPECT_TRUE(root) << root.error().message();
    EXPECT_TRUE(tuf::VerifyRole(root->envelope, root->signed_, tuf::Role::kRoot, "root"));
    return root ? root->signed_ : tuf::Root{};
  }

  net::HttpResponse Deploy(net::HttpsClient& op, std::string_view group,
                           const std::vector<std::string>& images) {
    Json body = {{"device_group", "Thermo/" + std::string(group)}, {"images", images}};
    return Send(op, "POST", "/api/v1/tenants/acme/deployments", body.dump());
  }

  FakeClock clock_{std::chrono::system_clock::now()};
  SystemRandom random_;
  std::optional<TempDir> dir_;
  std::filesystem::path data_dir_;
  std::unique_ptr<Service> service_;
  formats::OperatorConfig admin_config_;
  std::optional<crypto::Certificate> root_;
  std::unique_ptr<net::HttpsClient> admin_, reader_, contributor_, acme_admin_, globex_admin_;
  crypto::PrivateKey signing_key_ = *crypto::PrivateKey::Generate(crypto::KeyType::kEd25519);
};

TEST_F(DeploymentTest, ADeploymentIsANewTargetsVersionVerifiedByTheGroupsRootKeys) {
  const std::string app = Package(signing_key_, kAppComponent, "1.0.0");
  const std::string os = Package(signing_key_, kOsComponent, "2.1", formats::ImageType::kOs);
  const std::string app_id = AddImage(app), os_id = AddImage(os);
  const std::string group_id = GroupId("Field Test");
  Device d;
  auto device = EnrolledDevice(d, "Field Test");

  auto who = Parse(Send(*device, "GET", "/device/v1/whoami"));
  EXPECT_EQ(who["device_group"]["id"], group_id);
  EXPECT_EQ(who["device_group"]["name"], "Field Test");
  EXPECT_EQ(who["device_group"]["product"], "Thermo");
  EXPECT_EQ(who["repository"], "/device/v1/repo/" + group_id + "/");

  // The repository exists from the group's creation: targets version 1, empty.
  const tuf::Root root = TrustedRoot(*device, group_id);
  EXPECT_EQ(root.version, 1);
  EXPECT_TRUE(root.consistent_snapshot);
  Verified before = FetchVerified(*device, group_id, root);
  EXPECT_EQ(before.snapshot.targets.version, 1);
  EXPECT_TRUE(before.targets.targets.empty());

  auto created = Deploy(*contributor_, "Field Test", {app_id, os_id});
  ASSERT_EQ(created.status, 201) << created.body;
  Json dep = Parse(created);
  EXPECT_EQ(dep["targets_version"], 2);
  EXPECT_EQ(dep["image_count"], 2);
  EXPECT_EQ(dep["device_group"], "Field Test");
  EXPECT_EQ(dep["images"].size(), 2u);

  Verified after = FetchVerified(*device, group_id, root);
  EXPECT_EQ(after.targets.version, 2);
  EXPECT_GT(after.snapshot.version, before.snapshot.version);
  EXPECT_GT(after.timestamp.version, before.timestamp.version);
  ASSERT_EQ(after.targets.targets.size(), 3u);
  const tuf::TargetFile& app_target = after.targets.targets.at(app_id + ".imagepackage");
  EXPECT_EQ(app_target.length, static_cast<int64_t>(app.size()));
  EXPECT_EQ(HexEncode(app_target.sha256), app_id);
  EXPECT_EQ(app_target.custom, Json({{"component_id", kAppComponent},
                                     {"image_type", "Application"},
                                     {"version", "1.0.0"},
                                     {"package_image_id", "0d9a3a47-51c2-4f4e-8a10-7cc1d3b4e5f6"},
                                     {"name", "HelloMoat"}}));
  EXPECT_EQ(after.targets.targets.at(os_id + ".imagepackage").custom["image_type"], "OS");

  // The image package itself, from the image store, under its consistent-snapshot name.
  const std::string got =
      Fetch(*device, group_id, tuf::TargetPath(app_id + ".imagepackage", app_target.sha256, true));
  EXPECT_EQ(got, app);
  // image-signing-keys.json: the tenant's active keys, protected by the same signatures.
  const tuf::TargetFile& keys_target = after.targets.targets.at("image-signing-keys.json");
  const std::string keys_bytes = Fetch(
      *device, group_id, tuf::TargetPath("image-signing-keys.json", keys_target.sha256, true));
  EXPECT_EQ(tuf::DescribeTarget(keys_bytes), keys_target);
  Json keys = *ParseJson(keys_bytes, "keys");
  ASSERT_EQ(keys["keys"].size(), 1u);
  EXPECT_EQ(keys["keys"][0]["id"], signing_key_.public_key().FingerprintHex());
  EXPECT_EQ(keys["keys"][0]["name"], "release");
  EXPECT_EQ(keys["keys"][0]["public_key_pem"], signing_key_.public_key().ToPem());

  // Listed and shown for operators; audited.
  auto list = Parse(
      Send(*reader_, "GET", "/api/v1/tenants/acme/deployments?device_group=Thermo%2FField%20Test"));
  ASSERT_EQ(list["deployments"].size(), 1u);
  EXPECT_EQ(list["deployments"][0]["id"], dep["id"]);
  auto shown =
      Send(*reader_, "GET", "/api/v1/tenants/acme/deployments/" + dep["id"].get<std::string>());
  ASSERT_EQ(shown.status, 200);
  EXPECT_EQ(Parse(shown)["images"].size(), 2u);
  auto audit = Send(*admin_, "GET", "/api/v1/audit?tenant=acme");
  EXPECT_THAT(audit.body, HasSubstr("deployment.create"));

  // The state survives a restart: the next deployment continues the version chain.
  service_->Shutdown(1s);
  service_.reset();
  StartService();
  // New port: new connections.
  admin_ = Client(admin_config_.certificate_pem, admin_config_.private_key_pem);
  device = Connect(d.client_chain.at(0), d.tls_key, {d.client_chain.at(1)});
  contributor_ = MakeOperator("carl2", "acme", "Contributor");
  const std::string app2 = Package(signing_key_, kAppComponent, "1.1.0");
  const std::string app2_id = AddImage(app2);
  auto second = Deploy(*contributor_, "Field Test", {app2_id});
  ASSERT_EQ(second.status, 201) << second.body;
  Verified third = FetchVerified(*device, group_id, root);
  EXPECT_EQ(third.targets.version, 3);
  EXPECT_TRUE(third.targets.targets.contains(app2_id + ".imagepackage"));
  EXPECT_FALSE(third.targets.targets.contains(app_id + ".imagepackage"));
  // An image no deployment of the group names is not served, even though the store has it.
  auto old_image =
      Send(*device, "GET",
           fmt::format("/device/v1/repo/{}/targets/{}.{}.imagepackage", group_id, os_id, os_id));
  EXPECT_EQ(old_image.status, 200);  // deployed earlier to this group
  const std::string other = AddImage(Package(signing_key_, kOtherAppComponent, "9.0"));
  auto never =
      Send(*device, "GET",
           fmt::format("/device/v1/repo/{}/targets/{}.{}.imagepackage", group_id, other, other));
  EXPECT_EQ(never.status, 404) << never.body;
}

TEST_F(DeploymentTest, BadDeploymentsAreRefusedWithTheReason) {
  const std::string app_id = AddImage(Package(signing_key_, kAppComponent, "1.0.0"));
  const std::string app2_id = AddImage(Package(signing_key_, kAppComponent, "1.1.0"));
  const std::string os_id =
      AddImage(Package(signing_key_, kOsComponent, "2.1", formats::ImageType::kOs));
  const std::string os2_id = AddImage(Package(signing_key_, "11111111-2222-4333-8444-555555555555",
                                              "3.0", formats::ImageType::kOs));

  auto unknown = Deploy(*contributor_, "Production", {std::string(64, 'a')});
  EXPECT_EQ(unknown.status, 404);
  EXPECT_THAT(Detail(unknown), HasSubstr("no image " + std::string(64, 'a') + " in tenant 'acme'"));

  // Another tenant's image is as unknown as a made-up one.
  crypto::PrivateKey globex_key = *crypto::PrivateKey::Generate(crypto::KeyType::kEd25519);
  Json key = {{"public_key", globex_key.public_key().ToPem()}};
  ASSERT_EQ(
      Send(*globex_admin_, "POST", "/api/v1/tenants/globex/image-signing-keys", key.dump()).status,
      201);
  const std::string foreign = AddImage(Package(globex_key, kOtherAppComponent, "1.0"), true);
  auto theirs = Deploy(*contributor_, "Production", {foreign});
  EXPECT_EQ(theirs.status, 404);

  auto same_component = Deploy(*contributor_, "Production", {app_id, app2_id});
  EXPECT_EQ(same_component.status, 400);
  EXPECT_THAT(Detail(same_component),
              HasSubstr("are both for component " + std::string(kAppComponent)));

  auto two_os = Deploy(*contributor_, "Production", {os_id, os2_id});
  EXPECT_EQ(two_os.status, 400);
  EXPECT_THAT(Detail(two_os), HasSubstr("a device runs one OS"));

  auto twice = Deploy(*contributor_, "Production", {app_id, app_id});
  EXPECT_EQ(twice.status, 400);
  EXPECT_THAT(Detail(twice), HasSubstr("listed twice"));

  // Development takes no third-party app updates (the default policy of that group); an OS
  // image is fine.
  auto dev = Deploy(*contributor_, "Development", {app_id});
  EXPECT_EQ(dev.status, 409);
  EXPECT_THAT(Detail(dev), HasSubstr("no-third-party-app-updates"));
  EXPECT_EQ(Deploy(*contributor_, "Development", {os_id}).status, 201);

  auto reader = Deploy(*reader_, "Production", {app_id});
  EXPECT_EQ(reader.status, 403);
  EXPECT_THAT(Detail(reader), HasSubstr("Contributor"));

  auto no_group = Deploy(*contributor_, "Nope", {app_id});
  EXPECT_EQ(no_group.status, 404);
  EXPECT_EQ(Send(*contributor_, "POST", "/api/v1/tenants/acme/deployments",
                 R"({"device_group":"Thermo/Production","images":[]})")
                .status,
            400);
  EXPECT_EQ(Send(*contributor_, "POST", "/api/v1/tenants/acme/deployments",
                 R"({"device_group":"Thermo/Production","images":["xyz"]})")
                .status,
            400);

  // An image signed by a key revoked since is refused: devices would refuse it.
  ASSERT_EQ(
      Send(*acme_admin_, "POST", "/api/v1/tenants/acme/image-signing-keys/release/revoke").status,
      200);
  auto revoked = Deploy(*contributor_, "Production", {app_id});
  EXPECT_EQ(revoked.status, 409);
  EXPECT_THAT(Detail(revoked), HasSubstr("which is revoked"));

  // Nothing refused was published: Production still has targets version 1.
  auto repo = Parse(Send(
      *reader_, "GET", "/api/v1/tenants/acme/products/Thermo/device-groups/Production/repository"));
  EXPECT_EQ(repo["targets_version"], 1);
}

TEST_F(DeploymentTest, AGroupsRepositoryIsRefusedToDevicesOfOtherGroups) {
  Device a, b, loose;
  auto device_a = EnrolledDevice(a, "Field Test");
  auto device_b = EnrolledDevice(b, "Production");
  auto device_loose = EnrolledDevice(loose, "");
  const std::string field_test = GroupId("Field Test");

  EXPECT_EQ(
      Send(*device_a, "GET", fmt::format("/device/v1/repo/{}/1.root.json", field_test)).status,
      200);
  auto other = Send(*device_b, "GET", fmt::format("/device/v1/repo/{}/timestamp.json", field_test));
  EXPECT_EQ(other.status, 403);
  EXPECT_EQ(Parse(other)["type"], "urn:moat:problem:forbidden");
  EXPECT_THAT(Detail(other), HasSubstr("is not its own"));
  auto none = Send(*device_loose, "GET", fmt::format("/device/v1/repo/{}/1.root.json", field_test));
  EXPECT_EQ(none.status, 403);
  EXPECT_THAT(Detail(none), HasSubstr("in no device group"));
  // The bare identity certificate is not enough.
  auto boot = Bootstrap(a);
  auto identity = Send(*boot, "GET", fmt::format("/device/v1/repo/{}/1.root.json", field_test));
  EXPECT_EQ(identity.status, 403);
  // Operators are not devices.
  EXPECT_EQ(Send(*admin_, "GET", fmt::format("/device/v1/repo/{}/1.root.json", field_test)).status,
            403);
  // Unknown paths are 404.
  for (const char* path :
       {"9.root.json", "secrets.txt", "targets/nothing.bin", "../moat.db", "targets/a/b"}) {
    EXPECT_EQ(Send(*device_a, "GET", fmt::format("/device/v1/repo/{}/{}", field_test, path)).status,
              404)
        << path;
  }
}

TEST_F(DeploymentTest, TheTimestampIsReSignedByTheServiceClockWithoutDeployments) {
  Device d;
  auto device = EnrolledDevice(d, "Production");
  const std::string group_id = GroupId("Production");
  const tuf::Root root = TrustedRoot(*device, group_id);
  Verified v1 = FetchVerified(*device, group_id, root);
  const SystemTime start = clock_.Now();
  EXPECT_EQ(v1.timestamp.expires, std::chrono::floor<Seconds>(start) + 24h);

  // More than half of its day left: nothing to do.
  clock_.Advance(11h);
  service_->RunHousekeeping();
  EXPECT_EQ(FetchVerified(*device, group_id, root).timestamp.version, v1.timestamp.version);

  // Less than half left: re-signed, valid for a day from the service's now; same snapshot.
  clock_.Advance(2h);
  service_->RunHousekeeping();
  Verified v2 = FetchVerified(*device, group_id, root);
  EXPECT_EQ(v2.timestamp.version, v1.timestamp.version + 1);
  EXPECT_EQ(v2.timestamp.expires, std::chrono::floor<Seconds>(clock_.Now()) + 24h);
  EXPECT_EQ(v2.timestamp.snapshot, v1.timestamp.snapshot);
  // And again a day later, as long as the service runs.
  clock_.Advance(13h);
  service_->RunHousekeeping();
  EXPECT_EQ(FetchVerified(*device, group_id, root).timestamp.version, v1.timestamp.version + 2);
}

TEST_F(DeploymentTest, RotateRootYieldsARootSignedByTheOldAndNewKeys) {
  Device d;
  auto device = EnrolledDevice(d, "Field Test");
  const std::string group_id = GroupId("Field Test");
  const tuf::Root v1 = TrustedRoot(*device, group_id);

  const std::string path =
      "/api/v1/tenants/acme/products/Thermo/device-groups/Field%20Test/rotate-root";
  auto denied = Send(*contributor_, "POST", path, "{}");
  EXPECT_EQ(denied.status, 403);
  EXPECT_THAT(Detail(denied), HasSubstr("Administrator"));

  auto rotated = Send(*acme_admin_, "POST", path, "{}");
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  Json j = Parse(rotated);
  EXPECT_EQ(j["root_version"], 2);
  EXPECT_EQ(j["retired_root_keyids"], Json(v1.root.keyids));

  auto v2 = tuf::ParseRoot(Fetch(*device, group_id, "2.root.json"));
  ASSERT_TRUE(v2) << v2.error().message();
  EXPECT_EQ(v2->envelope.signatures.size(), 2u);
  EXPECT_TRUE(tuf::VerifyRole(v2->envelope, v1, tuf::Role::kRoot, "2.root.json by root 1"));
  EXPECT_TRUE(
      tuf::VerifyRole(v2->envelope, v2->signed_, tuf::Role::kRoot, "2.root.json by itself"));
  EXPECT_EQ(v2->signed_.root.keyids,
            std::vector<std::string>{j["new_root_keyid"].get<std::string>()});
  EXPECT_FALSE(v2->signed_.keys.contains(v1.root.keyids.front()));
  // The rest of the repository verifies under the new root, and keeps working after a restart
  // (the retired key is no longer used to sign anything).
  FetchVerified(*device, group_id, v2->signed_);
  const std::string app_id = AddImage(Package(signing_key_, kAppComponent, "1.0.0"));
  ASSERT_EQ(Deploy(*contributor_, "Field Test", {app_id}).status, 201);
  Verified after = FetchVerified(*device, group_id, v2->signed_);
  EXPECT_TRUE(after.targets.targets.contains(app_id + ".imagepackage"));
  auto repo =
      Parse(Send(*reader_, "GET",
                 "/api/v1/tenants/acme/products/Thermo/device-groups/Field%20Test/repository"));
  EXPECT_EQ(repo["root_version"], 2);
  int retired = 0;
  for (const auto& k : repo["keys"]) retired += k["retired_at"].is_null() ? 0 : 1;
  EXPECT_EQ(retired, 1);
}

TEST_F(DeploymentTest, StatusReportsShowInstalledVersusTargeted) {
  const std::string app_id = AddImage(Package(signing_key_, kAppComponent, "1.0.0"));
  const std::string other_id = AddImage(Package(signing_key_, kOtherAppComponent, "3.0"));
  ASSERT_EQ(Deploy(*contributor_, "Field Test", {app_id, other_id}).status, 201);
  Device d;
  auto device = EnrolledDevice(d, "Field Test");

  auto shown = Parse(Send(*reader_, "GET", "/api/v1/tenants/acme/devices/" + d.id));
  Json st = shown["deployment_status"];
  EXPECT_EQ(st["targeted_images"].size(), 2u);
  EXPECT_TRUE(st["reported_at"].is_null());
  EXPECT_TRUE(st["up_to_date"].is_null());

  Json report = {{"os", {{"name", "moat-linux"}, {"version", "1.0"}}},
                 {"installed",
                  {{{"component_id", kAppComponent}, {"image_id", app_id}, {"version", "1.0.0"}}}},
                 {"running", {kAppComponent}},
                 {"last_update",
                  {{"result", "ok"},
                   {"at", "2026-12-06T12:00:00Z"},
                   {"detail", "installed 1 of 2"},
                   {"targets_version", 2}}}};
  auto posted = Send(*device, "POST", "/device/v1/status", report.dump());
  EXPECT_EQ(posted.status, 204) << posted.body;

  auto status =
      Send(*reader_, "GET", "/api/v1/tenants/acme/devices/" + d.id + "/deployment-status");
  ASSERT_EQ(status.status, 200) << status.body;
  st = Parse(status);
  EXPECT_EQ(st["os"]["version"], "1.0");
  EXPECT_EQ(st["last_update"]["result"], "ok");
  EXPECT_EQ(st["last_update"]["targets_version"], 2);
  EXPECT_EQ(st["running"], Json::array({kAppComponent}));
  EXPECT_EQ(st["up_to_date"], false);
  ASSERT_EQ(st["targeted_images"].size(), 2u);
  for (const auto& t : st["targeted_images"]) {
    EXPECT_EQ(t["installed"], t["id"] == app_id) << t.dump();
  }

  // Bad reports name the field; the bare identity is refused.
  Json bad = report;
  bad["installed"][0]["image_id"] = "XYZ";
  auto refused = Send(*device, "POST", "/device/v1/status", bad.dump());
  EXPECT_EQ(refused.status, 400);
  EXPECT_THAT(Detail(refused), HasSubstr("body.installed[0].image_id"));
  bad = report;
  bad["last_update"]["result"] = "great";
  EXPECT_THAT(Detail(Send(*device, "POST", "/device/v1/status", bad.dump())),
              HasSubstr("body.last_update.result"));
  bad = report;
  bad["extra"] = 1;
  EXPECT_EQ(Send(*device, "POST", "/device/v1/status", bad.dump()).status, 400);
  auto boot = Bootstrap(d);
  EXPECT_EQ(Send(*boot, "POST", "/device/v1/status", report.dump()).status, 403);

  // Everything installed: up to date.
  report["installed"].push_back(
      {{"component_id", kOtherAppComponent}, {"image_id", other_id}, {"version", "3.0"}});
  ASSERT_EQ(Send(*device, "POST", "/device/v1/status", report.dump()).status, 204);
  st = Parse(Send(*reader_, "GET", "/api/v1/tenants/acme/devices/" + d.id + "/deployment-status"));
  EXPECT_EQ(st["up_to_date"], true);
}

}  // namespace
}  // namespace moat::service
