// Products, device groups, image-signing keys and images against a real moat-service: real TLS
// on loopback, SQLite in a temporary data directory, operators with each role made through the
// API itself, image packages built and signed here with the image package format's builder.
#include "service/fleet_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <sstream>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/random.h"
#include "crypto/digest.h"
#include "crypto/x509.h"
#include "formats/image_package.h"
#include "formats/operator_config.h"
#include "net/https_client.h"
#include "service/service.h"

namespace moat::service {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr std::string_view kComponentId = "6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10";
constexpr std::string_view kManifest =
    R"({"SchemaVersion":1,"Name":"HelloMoat","ComponentId":"6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10",)"
    R"("EntryPoint":"/bin/hello","CmdArgs":[],"Capabilities":{},"ApplicationType":"Default"})";

Json Parse(const net::HttpResponse& r) {
  auto j = ParseJson(r.body, "response");
  EXPECT_TRUE(j.has_value()) << r.body;
  return j ? *j : Json();
}

std::string Detail(const net::HttpResponse& r) { return Parse(r).value("detail", ""); }

std::string AsString(std::span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// A signed app package for kComponentId whose content differs by `version`.
std::string Package(const crypto::PrivateKey& key, std::string_view version) {
  formats::ImagePackageHeader h;
  h.image_type = formats::ImageType::kApplication;
  h.component_id = *formats::Guid::Parse(kComponentId);
  h.image_id = *formats::Guid::Parse("0d9a3a47-51c2-4f4e-8a10-7cc1d3b4e5f6");
  h.version = std::string(version);
  h.name = "HelloMoat";
  h.created = std::chrono::system_clock::now();
  formats::FileTreeEntry bin{
      .kind = formats::FileTreeEntry::Kind::kDirectory, .path = "bin", .mode = 0755};
  std::string program = fmt::format("hello program {}", version);
  formats::FileTreeEntry hello{.kind = formats::FileTreeEntry::Kind::kFile,
                               .path = "bin/hello",
                               .mode = 0755,
                               .data = std::vector<uint8_t>(program.begin(), program.end())};
  std::vector<formats::FileTreeEntry> files = {bin, hello};
  auto pkg = formats::BuildImagePackage(h, kManifest, files, key);
  EXPECT_TRUE(pkg.has_value()) << pkg.error().message();
  return pkg ? AsString(*pkg) : std::string();
}

std::string Sha256Hex(std::string_view bytes) { return HexEncode(crypto::Sha256(bytes)); }

class FleetApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("moat-fleet-api");
    ASSERT_TRUE(dir.has_value());
    dir_.emplace(std::move(*dir));
    data_dir_ = dir_->path() / "data";
    InitOptions init{.data_dir = data_dir_, .port = 0};
    std::ostringstream progress;
    auto made = InitDataDir(init, clock_, random_, progress);
    ASSERT_TRUE(made.has_value()) << made.error().message();
    auto service =
        Service::Start({.data_dir = data_dir_, .port = 0, .threads = 2}, clock_, random_);
    ASSERT_TRUE(service.has_value()) << service.error().message();
    service_ = std::move(*service);
    auto text = ReadFile(data_dir_ / "admin.moat.json", 1 << 20);
    ASSERT_TRUE(text.has_value());
    auto config = formats::ParseOperatorConfig(*text);
    ASSERT_TRUE(config.has_value());
    root_ = *crypto::Certificate::FromPem(config->root_certificate_pem);
    admin_ = Client(config->certificate_pem, config->private_key_pem);

    ASSERT_EQ(Send(*admin_, "POST", "/api/v1/tenants", R"({"name":"acme"})").status, 201);
    ASSERT_EQ(Send(*admin_, "POST", "/api/v1/tenants", R"({"name":"globex"})").status, 201);
    reader_ = MakeOperator("rita", "acme", "Reader");
    contributor_ = MakeOperator("carl", "acme", "Contributor");
    acme_admin_ = MakeOperator("ada", "acme", "Administrator");
    globex_admin_ = MakeOperator("gus", "globex", "Administrator");
  }

  std::unique_ptr<net::HttpsClient> Client(const std::string& chain_pem,
                                           const std::string& key_pem) {
    auto chain = crypto::Certificate::ParsePemChain(chain_pem);
    EXPECT_TRUE(chain.has_value());
    net::HttpsClientConfig config{.base_url =
                                      fmt::format("https://127.0.0.1:{}", service_->port())};
    config.tls.server_roots = {*root_};
    config.tls.certificate = chain->front();
    config.tls.chain.assign(chain->begin() + 1, chain->end());
    config.tls.key = *crypto::PrivateKey::FromPem(key_pem);
    return std::move(*net::HttpsClient::Create(config));
  }

  // An operator with `role` in `tenant`, added by the service Administrator.
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
  net::HttpResponse Admin(std::string_view method, std::string_view path,
                          std::string_view body = {}) {
    return Send(*admin_, method, path, body);
  }
  net::HttpResponse Upload(net::HttpsClient& c, std::string_view package,
                           std::string_view tenant = "acme") {
    return Send(c, "POST", fmt::format("/api/v1/tenants/{}/images", tenant), package,
                "application/octet-stream");
  }
  // Registers and claims a device into acme; returns its ID.
  std::string AddDevice() {
    auto key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
    Json body = {{"public_key", key->public_key().ToPem()}};
    EXPECT_EQ(Admin("POST", "/api/v1/devices", body.dump()).status, 201);
    const std::string id = key->public_key().FingerprintHex();
    EXPECT_EQ(Admin("POST", fmt::format("/api/v1/tenants/acme/devices/{}/claim", id)).status, 200);
    return id;
  }
  void AddKey(const crypto::PrivateKey& key, std::string_view name) {
    Json body = {{"public_key", key.public_key().ToPem()}, {"name", name}};
    auto r = Admin("POST", "/api/v1/tenants/acme/image-signing-keys", body.dump());
    ASSERT_EQ(r.status, 201) << r.body;
  }

  FakeClock clock_{std::chrono::system_clock::now()};
  SystemRandom random_;
  std::optional<TempDir> dir_;
  std::filesystem::path data_dir_;
  std::unique_ptr<Service> service_;
  std::optional<crypto::Certificate> root_;
  std::unique_ptr<net::HttpsClient> admin_, reader_, contributor_, acme_admin_, globex_admin_;
};

TEST_F(FleetApiTest, ProductLifecycleWithDefaultGroups) {
  auto r = Send(*contributor_, "POST", "/api/v1/tenants/acme/products",
                R"({"name":"Thermostat","description":"Wall unit"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r)["device_groups"], Json::parse(R"(["Development","Field Test","Production"])"));

  r = Admin("GET", "/api/v1/tenants/acme/products/Thermostat");
  ASSERT_EQ(r.status, 200) << r.body;
  Json p = Parse(r);
  EXPECT_EQ(p["description"], "Wall unit");
  ASSERT_EQ(p["device_groups"].size(), 3u);
  EXPECT_EQ(p["device_groups"][0]["name"], "Development");
  EXPECT_EQ(p["device_groups"][0]["app_update_policy"], "no-third-party-app-updates");
  EXPECT_EQ(p["device_groups"][1]["name"], "Field Test");
  EXPECT_EQ(p["device_groups"][1]["app_update_policy"], "update-all");
  EXPECT_EQ(p["device_groups"][2]["os_feed"], "Retail");
  EXPECT_TRUE(p["device_groups"][2]["update_window"].is_null());

  r = Send(*reader_, "GET", "/api/v1/tenants/acme/products");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(Parse(r)["products"].size(), 1u);
  EXPECT_EQ(Parse(r)["products"][0]["name"], "Thermostat");

  r = Admin("POST", "/api/v1/tenants/acme/products", R"({"name":"Thermostat"})");
  EXPECT_EQ(r.status, 409);
  EXPECT_THAT(Detail(r), HasSubstr("already has a product named 'Thermostat'"));

  r = Send(*contributor_, "PATCH", "/api/v1/tenants/acme/products/Thermostat",
           R"({"name":"Thermostat 2","description":"v2"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Parse(r)["name"], "Thermostat 2");
  // Names with spaces travel percent-encoded in the path.
  r = Admin("GET", "/api/v1/tenants/acme/products/Thermostat%202");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Parse(r)["description"], "v2");
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/products/Thermostat").status, 404);

  r = Send(*acme_admin_, "DELETE", "/api/v1/tenants/acme/products/Thermostat%202");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/products/Thermostat%202").status, 404);
  EXPECT_EQ(Parse(Admin("GET", "/api/v1/tenants/acme/products"))["products"].size(), 0u);
}

TEST_F(FleetApiTest, NamesAndBodiesAreValidated) {
  struct Case {
    std::string body;
    std::string detail;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"name":"../etc"})", "product name '../etc' must be 1..64 characters"},
           {R"({"name":" lead"})", "must be 1..64 characters"},
           {R"({"name":")" + std::string(65, 'a') + R"("})", "must be 1..64 characters"},
           {R"({"name":""})", "body.name"},
           {R"({"name":"ok","extra":1})", "unknown field 'extra'"},
           {R"({"name":"ok","description":"a\u0001b"})", "control characters"},
           {R"({"name":"ok","description":")" + std::string(300, 'd') + R"("})",
            "at most 256 bytes"},
       }) {
    auto r = Admin("POST", "/api/v1/tenants/acme/products", c.body);
    EXPECT_EQ(r.status, 400) << c.body;
    EXPECT_THAT(Detail(r), HasSubstr(c.detail)) << c.body;
  }
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/products", R"({"name":"Lamp"})").status, 201);
  const std::string groups = "/api/v1/tenants/acme/products/Lamp/device-groups";
  for (const Case& c : std::vector<Case>{
           {R"({"name":"a/b"})", "device group name 'a/b' must be"},
           {R"({"name":"G","os_feed":"Beta"})",
            "body.os_feed: 'Beta' is not one of Retail, "
            "RetailEval"},
           {R"({"name":"G","app_update_policy":"some"})",
            "body.app_update_policy: 'some' is not one of update-all, "
            "no-third-party-app-updates"},
           {R"({"name":"G","update_window":{"days":["Fun"],"start_hour":1,"end_hour":2}})",
            "body.update_window.days[0]: 'Fun' is not a day"},
           {R"({"name":"G","update_window":{"days":["Mon","mon"],"start_hour":1,"end_hour":2}})",
            "Mon is listed twice"},
           {R"({"name":"G","update_window":{"days":[],"start_hour":1,"end_hour":2}})",
            "name at least one day"},
           {R"({"name":"G","update_window":{"days":["Sat"],"start_hour":5,"end_hour":5}})",
            "end_hour (5) must be after start_hour (5)"},
           {R"({"name":"G","update_window":{"days":["Sat"],"start_hour":24,"end_hour":25}})",
            "start_hour"},
           {R"({"name":"G","update_window":{"days":["Sat"],"start_hour":1}})", "end_hour"},
           {R"({"name":"G","update_window":"weekends"})", "body.update_window"},
       }) {
    auto r = Admin("POST", groups, c.body);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    EXPECT_THAT(Detail(r), HasSubstr(c.detail)) << c.body;
  }
  // JSON bodies stay small although the transport allows an image's size.
  const std::string big = R"({"name":"Big","description":")" + std::string(100 << 10, 'd') + "\"}";
  EXPECT_EQ(Admin("POST", "/api/v1/tenants/acme/products", big).status, 413);
  // A malformed escape in a path segment is a 400, not a lookup of a strange name.
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/products/La%2").status, 400);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/products/La%2Fmp").status, 400);
}

TEST_F(FleetApiTest, DeviceGroupLifecycleWithUpdateWindow) {
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/products", R"({"name":"Lamp"})").status, 201);
  const std::string groups = "/api/v1/tenants/acme/products/Lamp/device-groups";
  auto r = Send(*contributor_, "POST", groups,
                R"({"name":"Beta","os_feed":"RetailEval","app_update_policy":"update-all",)"
                R"("update_window":{"days":["sun","Sat"],"start_hour":2,"end_hour":5}})");
  ASSERT_EQ(r.status, 201) << r.body;
  Json g = Parse(r);
  EXPECT_EQ(g["os_feed"], "RetailEval");
  EXPECT_EQ(g["update_window"]["days"], Json::parse(R"(["Sat","Sun"])"));
  EXPECT_EQ(g["update_window"]["start_hour"], 2);
  EXPECT_EQ(g["update_window"]["summary"], "Sat,Sun 02:00-05:00 device-local time");
  EXPECT_EQ(Send(*contributor_, "POST", groups, R"({"name":"Beta"})").status, 409);

  r = Send(*reader_, "GET", groups);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Parse(r)["device_groups"].size(), 4u);

  r = Send(*contributor_, "PATCH", groups + "/Beta",
           R"({"name":"Beta 2","app_update_policy":"no-third-party-app-updates",)"
           R"("update_window":null})");
  ASSERT_EQ(r.status, 200) << r.body;
  g = Parse(r);
  EXPECT_EQ(g["name"], "Beta 2");
  EXPECT_EQ(g["app_update_policy"], "no-third-party-app-updates");
  EXPECT_TRUE(g["update_window"].is_null());
  EXPECT_EQ(g["os_feed"], "RetailEval");  // untouched
  EXPECT_EQ(Send(*contributor_, "PATCH", groups + "/Beta%202", R"({"name":"Production"})").status,
            409);
  EXPECT_EQ(Admin("GET", groups + "/Beta").status, 404);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/products/Nope/device-groups").status, 404);

  EXPECT_EQ(Send(*contributor_, "DELETE", groups + "/Beta%202").status, 403);
  EXPECT_EQ(Send(*acme_admin_, "DELETE", groups + "/Beta%202").status, 200);
  EXPECT_EQ(Admin("GET", groups + "/Beta%202").status, 404);
}

TEST_F(FleetApiTest, RolesDecideAndOtherTenantsSeeNothing) {
  const std::string products = "/api/v1/tenants/acme/products";
  auto r = Send(*reader_, "POST", products, R"({"name":"Lamp"})");
  EXPECT_EQ(r.status, 403);
  EXPECT_THAT(Detail(r), HasSubstr("needs the Contributor or Administrator role"));
  ASSERT_EQ(Send(*contributor_, "POST", products, R"({"name":"Lamp"})").status, 201);
  EXPECT_EQ(Send(*reader_, "GET", products + "/Lamp").status, 200);
  EXPECT_EQ(Send(*reader_, "PATCH", products + "/Lamp", R"({"description":"x"})").status, 403);
  EXPECT_EQ(Send(*reader_, "POST", products + "/Lamp/device-groups", R"({"name":"G"})").status,
            403);
  r = Send(*contributor_, "DELETE", products + "/Lamp");
  EXPECT_EQ(r.status, 403);
  EXPECT_THAT(Detail(r), HasSubstr("needs the Administrator role"));

  auto key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  Json key_body = {{"public_key", key->public_key().ToPem()}};
  r = Send(*contributor_, "POST", "/api/v1/tenants/acme/image-signing-keys", key_body.dump());
  EXPECT_EQ(r.status, 403);
  EXPECT_THAT(Detail(r), HasSubstr("needs the Administrator role"));
  EXPECT_EQ(
      Send(*acme_admin_, "POST", "/api/v1/tenants/acme/image-signing-keys", key_body.dump()).status,
      201);
  EXPECT_EQ(Send(*reader_, "GET", "/api/v1/tenants/acme/image-signing-keys").status, 200);
  EXPECT_EQ(Upload(*reader_, Package(*key, "1.0")).status, 403);
  EXPECT_EQ(Upload(*contributor_, Package(*key, "1.0")).status, 201);
  EXPECT_EQ(Send(*reader_, "GET", "/api/v1/tenants/acme/images").status, 200);

  // SECURITY: globex's Administrator gets 404 for everything of acme's, like a missing tenant.
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", products},
           {"GET", products + "/Lamp"},
           {"DELETE", products + "/Lamp"},
           {"GET", products + "/Lamp/device-groups"},
           {"GET", "/api/v1/tenants/acme/image-signing-keys"},
           {"GET", "/api/v1/tenants/acme/images"}}) {
    r = Send(*globex_admin_, method, path);
    EXPECT_EQ(r.status, 404) << method << " " << path;
    EXPECT_EQ(Detail(r), "no tenant 'acme'");
  }
  EXPECT_EQ(Upload(*globex_admin_, Package(*key, "1.0")).status, 404);
  // Refusals are audited.
  r = Admin("GET", "/api/v1/audit?tenant=acme");
  EXPECT_THAT(r.body, HasSubstr("product.delete"));
  EXPECT_THAT(r.body, HasSubstr("denied"));
}

TEST_F(FleetApiTest, DevicesMoveBetweenGroupsAndBlockDeletion) {
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/products", R"({"name":"Lamp"})").status, 201);
  const std::string device = AddDevice();
  const std::string path = "/api/v1/tenants/acme/devices/" + device;
  EXPECT_EQ(Send(*reader_, "PATCH", path, R"({"device_group":"Lamp/Field Test"})").status, 403);
  auto r = Send(*contributor_, "PATCH", path, R"({"device_group":"Lamp/Field Test"})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Admin("GET", path);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Parse(r)["product"], "Lamp");
  EXPECT_EQ(Parse(r)["device_group"], "Field Test");
  EXPECT_EQ(Parse(Admin("GET", "/api/v1/tenants/acme/devices"))["devices"][0]["device_group"],
            "Field Test");

  r = Send(*acme_admin_, "DELETE", "/api/v1/tenants/acme/products/Lamp/device-groups/Field%20Test");
  EXPECT_EQ(r.status, 409);
  EXPECT_THAT(Detail(r), HasSubstr("device group 'Lamp/Field Test' still has 1 device(s)"));
  r = Send(*acme_admin_, "DELETE", "/api/v1/tenants/acme/products/Lamp");
  EXPECT_EQ(r.status, 409);
  EXPECT_THAT(Detail(r), HasSubstr("product 'Lamp' still has 1 device(s)"));

  r = Admin("PATCH", path, R"({"device_group":"Lamp/Nope"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(Detail(r), HasSubstr("no device group 'Nope' in product 'Lamp'"));
  r = Admin("PATCH", path, R"({"device_group":"Lamp"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Detail(r), HasSubstr("is not PRODUCT/GROUP"));
  EXPECT_EQ(Admin("PATCH", path, R"({})").status, 400);
  EXPECT_EQ(Admin("PATCH", path, R"({"device_group":5})").status, 400);
  EXPECT_EQ(Admin("PATCH", "/api/v1/tenants/acme/devices/XYZ", R"({"device_group":null})").status,
            400);
  // Another tenant's device and product are not found.
  EXPECT_EQ(Send(*globex_admin_, "PATCH", "/api/v1/tenants/globex/devices/" + device,
                 R"({"device_group":null})")
                .status,
            404);
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/globex/products", R"({"name":"Lamp"})").status, 201);
  r = Admin("PATCH", "/api/v1/tenants/globex/devices/" + device,
            R"({"device_group":"Lamp/Production"})");
  EXPECT_EQ(r.status, 404);

  ASSERT_EQ(Admin("PATCH", path, R"({"device_group":null})").status, 200);
  EXPECT_TRUE(Parse(Admin("GET", path))["device_group"].is_null());
  EXPECT_EQ(Send(*acme_admin_, "DELETE", "/api/v1/tenants/acme/products/Lamp").status, 200);
}

TEST_F(FleetApiTest, ATransferredDeviceLeavesItsGroup) {
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/products", R"({"name":"Lamp"})").status, 201);
  const std::string device = AddDevice();
  ASSERT_EQ(Admin("PATCH", "/api/v1/tenants/acme/devices/" + device,
                  R"({"device_group":"Lamp/Production"})")
                .status,
            200);
  ASSERT_EQ(
      Admin("POST", "/api/v1/tenants/acme/devices/" + device + "/transfer", R"({"to":"globex"})")
          .status,
      202);
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/globex/devices/" + device + "/accept-transfer").status,
            200);
  auto r = Admin("GET", "/api/v1/tenants/globex/devices/" + device);
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(Parse(r)["product"].is_null()) << r.body;
  EXPECT_TRUE(Parse(r)["device_group"].is_null()) << r.body;
  EXPECT_EQ(Admin("DELETE", "/api/v1/tenants/acme/products/Lamp").status, 200);
}

TEST_F(FleetApiTest, ImageSigningKeys) {
  const std::string keys = "/api/v1/tenants/acme/image-signing-keys";
  auto p256 = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto ed = crypto::PrivateKey::Generate(crypto::KeyType::kEd25519);
  Json body = {{"public_key", p256->public_key().ToPem()}, {"name", "release"}};
  auto r = Admin("POST", keys, body.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r)["id"], p256->public_key().FingerprintHex());
  EXPECT_EQ(Parse(r)["algorithm"], "ecdsa-p256");
  EXPECT_EQ(Admin("POST", keys, body.dump()).status, 409);
  body = {{"public_key", ed->public_key().ToPem()}};
  r = Admin("POST", keys, body.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r)["algorithm"], "ed25519");
  EXPECT_EQ(Parse(r)["name"], "key-" + ed->public_key().FingerprintHex().substr(0, 12));
  body = {{"public_key", ed->public_key().ToPem()}, {"name", "release"}};
  EXPECT_EQ(Admin("POST", keys, body.dump()).status, 409);
  r = Admin("POST", keys, R"({"public_key":"not a key"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Detail(r), HasSubstr("body.public_key"));

  r = Admin("GET", keys);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Parse(r)["image_signing_keys"].size(), 2u);

  r = Send(*contributor_, "POST", keys + "/release/revoke");
  EXPECT_EQ(r.status, 403);
  r = Send(*acme_admin_, "POST", keys + "/release/revoke");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Send(*acme_admin_, "POST", keys + "/" + p256->public_key().FingerprintHex() + "/revoke");
  EXPECT_EQ(r.status, 409);
  EXPECT_THAT(Detail(r), HasSubstr("already revoked"));
  EXPECT_EQ(Send(*acme_admin_, "POST", keys + "/nope/revoke").status, 404);
  EXPECT_EQ(Send(*globex_admin_, "POST", "/api/v1/tenants/globex/image-signing-keys/release/revoke")
                .status,
            404);
  r = Admin("GET", keys);
  // Listed by name: key-<hex> before release.
  EXPECT_EQ(Parse(r)["image_signing_keys"][1]["name"], "release");
  EXPECT_EQ(Parse(r)["image_signing_keys"][1]["status"], "revoked");
  EXPECT_EQ(Parse(r)["image_signing_keys"][0]["status"], "active");
}

TEST_F(FleetApiTest, ImagesAreVerifiedStoredOnceAndBecomeReferenceValues) {
  auto key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto ed = crypto::PrivateKey::Generate(crypto::KeyType::kEd25519);
  AddKey(*key, "release");
  AddKey(*ed, "ed");
  const std::string package = Package(*key, "1.0.0");
  const std::string id = Sha256Hex(package);

  auto r = Upload(*contributor_, package);
  ASSERT_EQ(r.status, 201) << r.body;
  Json j = Parse(r);
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["created"], true);
  EXPECT_EQ(j["component_id"], std::string(kComponentId));
  EXPECT_EQ(j["image_type"], "app");
  EXPECT_EQ(j["version"], "1.0.0");
  EXPECT_EQ(j["name"], "HelloMoat");
  EXPECT_EQ(j["size"], package.size());
  EXPECT_EQ(j["signer_key_name"], "release");

  // Stored once, by content, mode 0600.
  struct stat st {};
  ASSERT_EQ(::stat((data_dir_ / "images" / id).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  r = Upload(*contributor_, package);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Parse(r)["id"], id);
  EXPECT_EQ(Parse(r)["created"], false);
  EXPECT_EQ(Parse(Admin("GET", "/api/v1/tenants/acme/images"))["images"].size(), 1u);

  // It is now a known-good app measurement.
  r = Admin("GET", "/api/v1/tenants/acme/reference-values");
  bool found = false;
  const Json values = Parse(r);
  for (const auto& v : values["reference_values"]) {
    if (v["kind"] == "app" && v["name"] == std::string(kComponentId) && v["sha256"] == id)
      found = true;
  }
  EXPECT_TRUE(found) << r.body;

  r = Send(*reader_, "GET", "/api/v1/tenants/acme/images/" + id);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Parse(r)["signer_key_id"], key->public_key().FingerprintHex());
  r = Send(*reader_, "GET", "/api/v1/tenants/acme/images/" + id + "/content");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/octet-stream");
  EXPECT_EQ(r.body, package);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/images/" + std::string(64, 'a')).status, 404);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/images/ABC").status, 400);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/globex/images/" + id).status, 404);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/globex/images/" + id + "/content").status, 404);

  // A damaged blob is replaced when the image is added again.
  ASSERT_TRUE(AtomicWriteFile(data_dir_ / "images" / id, std::string_view("junk"), {.mode = 0600})
                  .has_value());
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/images/" + id + "/content").status, 500);
  EXPECT_EQ(Upload(*contributor_, package).status, 200);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/images/" + id + "/content").body, package);

  // An Ed25519-signed package is accepted too.
  r = Upload(*contributor_, Package(*ed, "1.0.1"));
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r)["signer_key_name"], "ed");

  // The same bytes in another tenant: that tenant's own keys decide.
  r = Upload(*admin_, package, "globex");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Detail(r), HasSubstr("signed by unknown key"));
  EXPECT_THAT(Detail(r), HasSubstr("tenant 'globex' has no image-signing keys yet"));
}

TEST_F(FleetApiTest, BadPackagesAreRefusedWithTheReason) {
  auto key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  AddKey(*key, "release");
  std::string package = Package(*key, "2.0");

  std::string tampered = package;
  tampered[tampered.size() / 2] ^= 0x01;
  auto r = Upload(*admin_, tampered);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Detail(r), HasSubstr("signature does not match"));

  auto foreign = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  r = Upload(*admin_, Package(*foreign, "2.0"));
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Detail(r),
              HasSubstr("signed by unknown key " + foreign->public_key().FingerprintHex()));

  for (const std::string& junk : {std::string("not a package"),
                                  package.substr(0, package.size() / 2), std::string(4096, '\0')}) {
    r = Upload(*admin_, junk);
    EXPECT_GE(r.status, 400) << r.body;
    EXPECT_LT(r.status, 500) << r.body;
  }
  // Over the image limit: the server refuses it before the handler runs.
  r = Upload(*admin_, std::string(FleetApi::kMaxImagePackageBytes + 1, 'x'));
  EXPECT_EQ(r.status, 413);
  r = Upload(*admin_, "");
  EXPECT_EQ(r.status, 400);
  r = Send(*admin_, "POST", "/api/v1/tenants/acme/images", package, "application/json");
  EXPECT_EQ(r.status, 415);
  EXPECT_THAT(Detail(r), HasSubstr("application/octet-stream"));

  // Revoked: verified, then refused naming the key.
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/image-signing-keys/release/revoke").status, 200);
  r = Upload(*admin_, package);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Detail(r), HasSubstr("signed by image-signing key 'release'"));
  EXPECT_THAT(Detail(r), HasSubstr("which was revoked"));
  EXPECT_EQ(Parse(Admin("GET", "/api/v1/tenants/acme/images"))["images"].size(), 0u);
  r = Admin("GET", "/api/v1/audit?tenant=acme");
  EXPECT_THAT(r.body, HasSubstr("refused"));
}

}  // namespace
}  // namespace moat::service
