// The device plane against a real moat-service: real TLS on loopback, SQLite in a temporary
// data directory, devices played by keys made here (the device runtime speaks the same
// protocol). The clock is a FakeClock started at the real time, so TLS (which uses the real
// clock) accepts what the service issues, and tests can move it to expire challenges.
#include "service/device_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/random.h"
#include "crypto/digest.h"
#include "crypto/x509.h"
#include "formats/attestation.h"
#include "formats/failure_event.h"
#include "formats/operator_config.h"
#include "net/https_client.h"
#include "service/service.h"
#include "support/shell.h"

namespace moat::service {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

Json Parse(const net::HttpResponse& r) {
  auto j = ParseJson(r.body, "response");
  EXPECT_TRUE(j.has_value()) << r.body;
  return j ? *j : Json();
}

std::string ProblemType(const net::HttpResponse& r) {
  Json j = Parse(r);
  return j.contains("type") ? j["type"].get<std::string>() : "";
}

crypto::Sha256Digest DigestOf(std::string_view text) { return crypto::Sha256(text); }

// A device: its identity key (the root of trust's), its TLS client key, and a connection.
struct Device {
  crypto::PrivateKey identity = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  crypto::PrivateKey tls_key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  std::string id = identity.public_key().FingerprintHex();
  formats::MeasurementLog log{{
      {.pcr = formats::kMoatPcr,
       .kind = formats::MeasurementKind::kOs,
       .name = "moat-linux",
       .version = "1.0",
       .digest = DigestOf("os image 1.0")},
      {.pcr = formats::kMoatPcr,
       .kind = formats::MeasurementKind::kApp,
       .name = "telemetry",
       .version = "1.2.0",
       .digest = DigestOf("telemetry 1.2.0")},
  }};
};

class DeviceApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("moat-device-api");
    ASSERT_TRUE(dir.has_value());
    dir_.emplace(std::move(*dir));
    InitOptions init{.data_dir = dir_->path() / "data", .port = 0};
    std::ostringstream progress;
    auto made = InitDataDir(init, clock_, random_, progress);
    ASSERT_TRUE(made.has_value()) << made.error().message();
    auto service =
        Service::Start({.data_dir = init.data_dir, .port = 0, .threads = 2}, clock_, random_);
    ASSERT_TRUE(service.has_value()) << service.error().message();
    service_ = std::move(*service);
    auto text = ReadFile(init.data_dir / "admin.moat.json", 1 << 20);
    ASSERT_TRUE(text.has_value());
    auto config = formats::ParseOperatorConfig(*text);
    ASSERT_TRUE(config.has_value());
    admin_config_ = *config;
    root_ = *crypto::Certificate::FromPem(admin_config_.root_certificate_pem);
    admin_ = Operator(admin_config_);

    ASSERT_EQ(Admin("POST", "/api/v1/tenants", R"({"name":"acme"})").status, 201);
    ASSERT_EQ(Admin("POST", "/api/v1/tenants", R"({"name":"globex"})").status, 201);
    for (const auto& [kind, name, content] : {std::tuple{"os", "moat-linux", "os image 1.0"},
                                              std::tuple{"app", "telemetry", "telemetry 1.2.0"}}) {
      Json body = {{"kind", kind}, {"name", name}, {"sha256", HexEncode(DigestOf(content))}};
      ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/reference-values", body.dump()).status, 201);
    }
  }

  std::string BaseUrl() const { return fmt::format("https://127.0.0.1:{}", service_->port()); }

  std::unique_ptr<net::HttpsClient> Operator(const formats::OperatorConfig& c) {
    auto chain = crypto::Certificate::ParsePemChain(c.certificate_pem);
    EXPECT_TRUE(chain.has_value());
    net::HttpsClientConfig config{.base_url = BaseUrl()};
    config.tls.server_roots = {*root_};
    config.tls.certificate = chain->front();
    config.tls.chain.assign(chain->begin() + 1, chain->end());
    config.tls.key = *crypto::PrivateKey::FromPem(c.private_key_pem);
    return std::move(*net::HttpsClient::Create(config));
  }

  // A connection presenting `cert` (+ chain) with `key`.
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

  std::unique_ptr<net::HttpsClient> Bootstrap(const Device& d) {
    auto now = std::chrono::system_clock::now();
    auto cert = crypto::SelfCertifiedDeviceCertificate(d.identity, now - 1h, now + 1h);
    EXPECT_TRUE(cert.has_value());
    return Connect(*cert, d.identity);
  }

  net::HttpResponse Admin(std::string_view method, std::string_view path,
                          std::string_view body = {}) {
    auto r = admin_->Send(method, path, body);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return r ? *r : net::HttpResponse{};
  }

  void RegisterAndClaim(const Device& d, std::string_view tenant = "acme") {
    Json body = {{"public_key", d.identity.public_key().ToPem()}};
    ASSERT_EQ(Admin("POST", "/api/v1/devices", body.dump()).status, 201);
    ASSERT_EQ(
        Admin("POST", fmt::format("/api/v1/tenants/{}/devices/{}/claim", tenant, d.id)).status,
        200);
  }

  std::vector<uint8_t> Challenge(net::HttpsClient& c) {
    auto r = c.Send("POST", "/device/v1/attestation/challenge");
    EXPECT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 201) << r->body;
    Json j = Parse(*r);
    auto nonce = Base64Decode(j.value("nonce", ""), Base64Alphabet::kUrl, Base64Padding::kWithout);
    EXPECT_TRUE(nonce.has_value());
    return nonce ? *nonce : std::vector<uint8_t>{};
  }

  // Evidence signed by `signer` (the device's identity key unless a test says otherwise).
  std::string AttestationBody(const Device& d, const std::vector<uint8_t>& nonce,
                              const crypto::PrivateKey* signer = nullptr,
                              std::string evidence_device_id = "") {
    formats::AttestationEvidence e{
        .device_id = evidence_device_id.empty() ? d.id : evidence_device_id,
        .nonce = nonce,
        .log = d.log,
        .os_version = "1.0"};
    auto sig = (signer ? *signer : d.identity).Sign(formats::AttestationSigningInput(e));
    EXPECT_TRUE(sig.has_value());
    e.signature = *sig;
    auto csr = crypto::CertificateRequest::Create(d.tls_key, d.id);
    EXPECT_TRUE(csr.has_value());
    return Json{{"evidence", formats::ToJson(e)}, {"csr", csr->ToPem()}}.dump();
  }

  net::HttpResponse Attest(net::HttpsClient& c, const std::string& body) {
    auto r = c.Send("POST", "/device/v1/attestation", body);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return r ? *r : net::HttpResponse{};
  }

  FakeClock clock_{std::chrono::system_clock::now()};
  SystemRandom random_;
  std::optional<TempDir> dir_;
  std::unique_ptr<Service> service_;
  formats::OperatorConfig admin_config_;
  std::optional<crypto::Certificate> root_;
  std::unique_ptr<net::HttpsClient> admin_;
};

TEST_F(DeviceApiTest, GoodDeviceGetsA24HourClientCertificateChainedToItsTenant) {
  Device d;
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  auto who = boot->Send("GET", "/device/v1/whoami");
  ASSERT_TRUE(who.has_value());
  ASSERT_EQ(who->status, 200) << who->body;
  EXPECT_EQ(Parse(*who)["credential"], "identity");

  const SystemTime before = clock_.Now();
  auto r = Attest(*boot, AttestationBody(d, Challenge(*boot)));
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Parse(r);
  EXPECT_EQ(j["result"], "passed");
  EXPECT_TRUE(j["failures"].empty());
  auto chain = crypto::Certificate::ParsePemChain(j["client_certificate"].get<std::string>());
  ASSERT_TRUE(chain.has_value());
  ASSERT_EQ(chain->size(), 2u);
  const crypto::Certificate& leaf = chain->at(0);
  EXPECT_EQ(leaf.public_key().FingerprintHex(), d.tls_key.public_key().FingerprintHex());
  EXPECT_EQ(*crypto::DeviceIdFromCertificate(leaf), d.id);
  EXPECT_TRUE(leaf.HasExtendedKeyUsage(crypto::ExtendedKeyUsage::kClientAuth));
  // Exactly 24 h after issue (certificate times have one-second precision; the clock is fake and
  // stands still, so "issue" is `before`).
  EXPECT_EQ(leaf.NotAfter(), std::chrono::floor<std::chrono::seconds>(before) + 24h);
  const crypto::Certificate roots[] = {*root_};
  const crypto::Certificate intermediates[] = {chain->at(1)};
  EXPECT_TRUE(crypto::VerifyCertificateChain(leaf, intermediates, roots, clock_.Now(),
                                             crypto::ExtendedKeyUsage::kClientAuth));
  EXPECT_THAT(chain->at(1).Subject(), HasSubstr("acme"));

  // openssl(1) agrees, with the chain as `moat ca-certificate download --chain` gives it.
  const auto dir = dir_->path();
  ASSERT_TRUE(AtomicWriteFile(dir / "leaf.pem", leaf.ToPem()).has_value());
  ASSERT_TRUE(AtomicWriteFile(dir / "ca.pem", chain->at(1).ToPem() + root_->ToPem()).has_value());
  auto verify = test_support::RunShell(
      fmt::format("openssl verify -purpose sslclient -CAfile {}/ca.pem {}/leaf.pem 2>&1",
                  dir.string(), dir.string()));
  EXPECT_EQ(verify.status, 0) << verify.output;
  auto end = test_support::RunShell(
      fmt::format("openssl x509 -noout -enddate -in {}/leaf.pem", dir.string()));
  EXPECT_THAT(end.output, HasSubstr("notAfter="));

  // The client certificate is now the device's credential.
  auto device = Connect(leaf, d.tls_key, {chain->at(1)});
  who = device->Send("GET", "/device/v1/whoami");
  ASSERT_TRUE(who.has_value());
  ASSERT_EQ(who->status, 200) << who->body;
  EXPECT_EQ(Parse(*who)["credential"], "client");
  EXPECT_EQ(Parse(*who)["tenant"], "acme");

  // The operator sees what the device proved.
  auto shown = Admin("GET", "/api/v1/tenants/acme/devices/" + d.id);
  ASSERT_EQ(shown.status, 200);
  Json s = Parse(shown);
  EXPECT_EQ(s["last_attestation_result"], "passed");
  EXPECT_EQ(s["os_version"], "1.0");
  EXPECT_EQ(s["certificate_not_after"], FormatRfc3339(leaf.NotAfter()));
  ASSERT_EQ(s["installed_images"].size(), 1u);
  EXPECT_EQ(s["installed_images"][0]["name"], "telemetry");
  EXPECT_EQ(s["installed_images"][0]["version"], "1.2.0");
}

TEST_F(DeviceApiTest, UnexpectedMeasurementGetsOnlyAnUpdateCertificateAndASecurityEvent) {
  Device d;
  d.log.entries[1].digest = DigestOf("telemetry, tampered");
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  auto r = Attest(*boot, AttestationBody(d, Challenge(*boot)));
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Parse(r);
  EXPECT_EQ(j["result"], "failed");
  EXPECT_TRUE(j["client_certificate"].is_null());
  ASSERT_EQ(j["failures"].size(), 1u);
  EXPECT_THAT(j["failures"][0].get<std::string>(), HasSubstr("app 'telemetry'"));
  auto update = crypto::Certificate::ParsePemChain(j["update_certificate"].get<std::string>());
  ASSERT_TRUE(update.has_value());
  EXPECT_TRUE(update->front().HasExtendedKeyUsage(crypto::ExtendedKeyUsage::kMoatDeviceUpdate));
  EXPECT_FALSE(update->front().HasExtendedKeyUsage(crypto::ExtendedKeyUsage::kClientAuth));

  // The update certificate works on moat-service (device endpoints)...
  auto device = Connect(update->front(), d.tls_key, {update->at(1)});
  auto who = device->Send("GET", "/device/v1/whoami");
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ(Parse(*who)["credential"], "update");
  // ...but not as a TLS client certificate anywhere that wants clientAuth (openssl's check).
  const auto dir = dir_->path();
  ASSERT_TRUE(AtomicWriteFile(dir / "update.pem", update->front().ToPem()).has_value());
  ASSERT_TRUE(AtomicWriteFile(dir / "ca.pem", update->at(1).ToPem() + root_->ToPem()).has_value());
  auto verify = test_support::RunShell(
      fmt::format("openssl verify -purpose sslclient -CAfile {}/ca.pem {}/update.pem 2>&1",
                  dir.string(), dir.string()));
  EXPECT_NE(verify.status, 0) << verify.output;

  auto events = Admin("GET", "/api/v1/tenants/acme/security-events");
  ASSERT_EQ(events.status, 200);
  Json e = Parse(events)["security_events"];
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["device_id"], d.id);
  EXPECT_EQ(e[0]["kind"], "attestation.measurement-mismatch");
  auto shown = Parse(Admin("GET", "/api/v1/tenants/acme/devices/" + d.id));
  EXPECT_THAT(shown["last_attestation_result"].get<std::string>(), HasSubstr("failed"));
  EXPECT_TRUE(shown["certificate_not_after"].is_null());
}

// The service looks reference values up by the names the log measures, 64 names per query: a
// long log spans several queries, and a value of the same name in another tenant never counts.
TEST_F(DeviceApiTest, LongLogsAreJudgedAcrossLookupsAndOnlyAgainstTheDevicesTenant) {
  Device d;
  for (int i = 0; i < 150; ++i) {
    const std::string name = fmt::format("app-{:03}", i);
    d.log.entries.push_back({.pcr = formats::kMoatPcr,
                             .kind = formats::MeasurementKind::kApp,
                             .name = name,
                             .digest = DigestOf(name)});
    // Every app but the last is known to acme; the last only to globex.
    Json body = {{"kind", "app"}, {"name", name}, {"sha256", HexEncode(DigestOf(name))}};
    const std::string tenant = i == 149 ? "globex" : "acme";
    ASSERT_EQ(Admin("POST", fmt::format("/api/v1/tenants/{}/reference-values", tenant), body.dump())
                  .status,
              201);
  }
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  auto r = Attest(*boot, AttestationBody(d, Challenge(*boot)));
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Parse(r);
  EXPECT_EQ(j["result"], "failed");
  ASSERT_EQ(j["failures"].size(), 1u) << j.dump();
  EXPECT_THAT(j["failures"][0].get<std::string>(),
              HasSubstr("app 'app-149' (sha256 " + HexEncode(DigestOf("app-149")) +
                        ") has no reference value in this tenant"));

  // Known to acme as well: now all 152 entries pass.
  Json body = {{"kind", "app"}, {"name", "app-149"}, {"sha256", HexEncode(DigestOf("app-149"))}};
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/reference-values", body.dump()).status, 201);
  r = Attest(*boot, AttestationBody(d, Challenge(*boot)));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Parse(r)["result"], "passed") << r.body;
}

TEST_F(DeviceApiTest, NoncesAreSingleUseAndExpire) {
  Device d;
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  auto nonce = Challenge(*boot);
  ASSERT_EQ(Attest(*boot, AttestationBody(d, nonce)).status, 200);
  auto again = Attest(*boot, AttestationBody(d, nonce));
  EXPECT_EQ(again.status, 400);
  EXPECT_EQ(ProblemType(again), "urn:moat:problem:invalid-nonce");

  auto late = Challenge(*boot);
  clock_.Advance(3min);
  auto expired = Attest(*boot, AttestationBody(d, late));
  EXPECT_EQ(expired.status, 400);
  EXPECT_THAT(Parse(expired)["detail"].get<std::string>(), HasSubstr("expired"));

  // A nonce never issued.
  std::vector<uint8_t> made_up(32, 7);
  EXPECT_EQ(Attest(*boot, AttestationBody(d, made_up)).status, 400);
}

TEST_F(DeviceApiTest, ANonceIssuedToAnotherDeviceIsRefused) {
  Device a, b;
  RegisterAndClaim(a);
  RegisterAndClaim(b);
  auto boot_a = Bootstrap(a);
  auto boot_b = Bootstrap(b);
  auto nonce_for_a = Challenge(*boot_a);
  auto r = Attest(*boot_b, AttestationBody(b, nonce_for_a));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ProblemType(r), "urn:moat:problem:invalid-nonce");
}

TEST_F(DeviceApiTest, BadSignatureIsRefusedAndRecorded) {
  Device d;
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  auto other = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto r = Attest(*boot, AttestationBody(d, Challenge(*boot), &other));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(ProblemType(r), "urn:moat:problem:attestation-failed");
  Json e = Parse(Admin("GET", "/api/v1/tenants/acme/security-events"))["security_events"];
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["kind"], "attestation.bad-signature");
}

TEST_F(DeviceApiTest, EvidenceForAnotherDeviceIsRefused) {
  Device a, b;
  RegisterAndClaim(a);
  RegisterAndClaim(b);
  auto boot_a = Bootstrap(a);
  auto r = Attest(*boot_a, AttestationBody(a, Challenge(*boot_a), nullptr, b.id));
  EXPECT_EQ(r.status, 403);
  EXPECT_THAT(Parse(r)["detail"].get<std::string>(), HasSubstr(b.id));
}

TEST_F(DeviceApiTest, UnknownAndUnclaimedDevicesGetAClearRefusal) {
  Device unknown;
  auto boot = Bootstrap(unknown);
  auto r = boot->Send("POST", "/device/v1/attestation/challenge");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(ProblemType(*r), "urn:moat:problem:device-not-registered");

  Device unclaimed;
  Json body = {{"public_key", unclaimed.identity.public_key().ToPem()}};
  ASSERT_EQ(Admin("POST", "/api/v1/devices", body.dump()).status, 201);
  auto boot2 = Bootstrap(unclaimed);
  r = boot2->Send("POST", "/device/v1/attestation/challenge");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(ProblemType(*r), "urn:moat:problem:device-not-claimed");
  EXPECT_THAT(Parse(*r)["detail"].get<std::string>(), HasSubstr("moat device claim"));
}

TEST_F(DeviceApiTest, BootstrapIdentityIsNotAnOperator) {
  Device d;
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  auto r = boot->Send("GET", "/api/v1/tenants");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
}

TEST_F(DeviceApiTest, OperatorCertificateIsNotADevice) {
  auto r = admin_->Send("POST", "/device/v1/attestation/challenge");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 403);
}

TEST_F(DeviceApiTest, MalformedAttestationRequestsAre4xx) {
  Device d;
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  for (const std::string& body :
       {std::string("{}"), std::string(R"({"evidence":{},"csr":""})"), std::string("not json"),
        std::string(R"({"evidence":[],"csr":"x","extra":1})"),
        std::string(
            R"({"evidence":{"device_id":"00"},"csr":"-----BEGIN CERTIFICATE REQUEST-----"})")}) {
    auto r = Attest(*boot, body);
    EXPECT_GE(r.status, 400) << body;
    EXPECT_LT(r.status, 500) << body << " -> " << r.body;
  }
}

TEST_F(DeviceApiTest, ReferenceValuesNeedAnAdministratorAndAreTenantScoped) {
  // globex cannot see acme's values; a bad digest is a 400.
  auto list = Parse(Admin("GET", "/api/v1/tenants/acme/reference-values"));
  ASSERT_EQ(list["reference_values"].size(), 2u);
  EXPECT_EQ(
      Parse(Admin("GET", "/api/v1/tenants/globex/reference-values"))["reference_values"].size(),
      0u);
  auto bad = Admin("POST", "/api/v1/tenants/acme/reference-values",
                   R"({"kind":"app","name":"x","sha256":"ABCD"})");
  EXPECT_EQ(bad.status, 400);
  auto dup = Admin(
      "POST", "/api/v1/tenants/acme/reference-values",
      Json{{"kind", "os"}, {"name", "moat-linux"}, {"sha256", HexEncode(DigestOf("os image 1.0"))}}
          .dump());
  EXPECT_EQ(dup.status, 409);
  std::string id = list["reference_values"][0]["id"];
  EXPECT_EQ(Admin("DELETE", "/api/v1/tenants/globex/reference-values/" + id).status, 404);
  EXPECT_EQ(Admin("DELETE", "/api/v1/tenants/acme/reference-values/" + id).status, 200);
  EXPECT_EQ(Parse(Admin("GET", "/api/v1/tenants/acme/reference-values"))["reference_values"].size(),
            1u);
}

formats::FailureEvent Crash(std::string event_id, int signal = 11) {
  formats::FailureEvent e;
  e.event_id = std::move(event_id);
  e.kind = formats::FailureKind::kAppCrash;
  e.component_id = *formats::Guid::Parse("6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10");
  e.image_id = *formats::Guid::Parse("0c8d1b3a-5e6f-4a7b-8c9d-0e1f2a3b4c5d");
  e.signal = signal;
  e.pc = 0x213ECC62;
  e.lr = 0x2136E6F7;
  e.sp = 0xBE96DC28;
  e.stack = {{.pc = 0x1234, .module = "app", .offset = 0x234}};
  e.first_time = e.last_time =
      std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  return e;
}

TEST_F(DeviceApiTest, FailureReportsAreIdempotentBucketedAndExportedAsCsv) {
  Device d;
  d.log.entries[1].digest = DigestOf("unknown app");  // an unhealthy device still reports
  RegisterAndClaim(d);
  auto boot = Bootstrap(d);
  // A bare identity may not report.
  const std::string batch = formats::SerializeFailureEventBatch(
      std::vector{Crash("11111111-1111-4111-8111-111111111111"),
                  Crash("22222222-2222-4222-8222-222222222222")});
  auto refused = boot->Send("POST", "/device/v1/reports", batch);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->status, 403);

  Json j = Parse(Attest(*boot, AttestationBody(d, Challenge(*boot))));
  auto update = crypto::Certificate::ParsePemChain(j["update_certificate"].get<std::string>());
  auto device = Connect(update->front(), d.tls_key, {update->at(1)});
  auto r = device->Send("POST", "/device/v1/reports", batch);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Parse(*r)["accepted"], 2);
  // Re-sent after a lost answer: nothing changes.
  r = device->Send("POST", "/device/v1/reports", batch);
  EXPECT_EQ(Parse(*r)["accepted"], 0);
  EXPECT_EQ(Parse(*r)["duplicates"], 2);
  // A dropped-events record is kept, counted, and in no bucket.
  formats::FailureEvent dropped;
  dropped.event_id = "33333333-3333-4333-8333-333333333333";
  dropped.kind = formats::FailureKind::kEventsDropped;
  dropped.count = 17;
  dropped.first_time = dropped.last_time = Crash("x").first_time;
  r = device->Send("POST", "/device/v1/reports",
                   formats::SerializeFailureEventBatch(std::vector{dropped}));
  EXPECT_EQ(Parse(*r)["accepted"], 1);
  // Malformed batches are 400s naming the problem.
  r = device->Send("POST", "/device/v1/reports", R"({"events":[{"event_id":"nope"}]})");
  EXPECT_EQ(r->status, 400);
  EXPECT_THAT(Parse(*r)["detail"].get<std::string>(), HasSubstr("events[0]"));

  auto buckets = Parse(Admin("GET", "/api/v1/tenants/acme/failure-buckets"))["buckets"];
  ASSERT_EQ(buckets.size(), 1u);  // two crashes, one signature, one image
  EXPECT_EQ(buckets[0]["event_count"], 2);
  EXPECT_EQ(buckets[0]["component_id"], "6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10");

  auto csv = Admin("GET", "/api/v1/tenants/acme/error-report");
  ASSERT_EQ(csv.status, 200);
  EXPECT_EQ(csv.content_type, "text/csv; charset=utf-8");
  EXPECT_THAT(csv.body, HasSubstr("Device ID,Event Type,Event Class,Event Count,Description,"
                                  "Start Time,End Time,Image ID,Bucket,Stack Signature\r\n"));
  EXPECT_THAT(csv.body, HasSubstr("AppCrash (pc=213ECC62; lr=2136E6F7; sp=BE96DC28; signo=11"));
  EXPECT_THAT(csv.body, HasSubstr("EventsDropped (count=17)"));
  EXPECT_THAT(csv.body, HasSubstr(buckets[0]["id"].get<std::string>()));
  size_t lines = std::count(csv.body.begin(), csv.body.end(), '\n');
  EXPECT_EQ(lines, 4u);  // header + 2 crashes + 1 dropped record
  // Filters, and another tenant sees nothing.
  auto none = Admin("GET", "/api/v1/tenants/acme/error-report?since=2099-01-01T00:00:00Z");
  EXPECT_EQ(std::count(none.body.begin(), none.body.end(), '\n'), 1);
  EXPECT_EQ(Admin("GET", "/api/v1/tenants/acme/error-report?since=yesterday").status, 400);
  auto other = Admin("GET", "/api/v1/tenants/globex/error-report");
  EXPECT_EQ(std::count(other.body.begin(), other.body.end(), '\n'), 1);
}

}  // namespace
}  // namespace moat::service
