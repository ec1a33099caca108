// TPM 2.0 devices end to end: a real moat-service over mTLS on loopback, a swtpm per device,
// the device played by moatd's own Attestor over a Tpm2KeyStore. Covers enrolment by EK
// certificate, credential activation, quote verification against the log and the tenant's
// reference values, and the attacks issue 8 names.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/random.h"
#include "crypto/tpm_primitives.h"
#include "crypto/x509.h"
#include "device/agent/attestor.h"
#include "formats/attestation.h"
#include "formats/operator_config.h"
#include "net/https_client.h"
#include "rot/testing/swtpm.h"
#include "rot/tpm2_key_store.h"
#include "service/service.h"

namespace moat::service {
namespace {

using namespace std::chrono_literals;

Json Parse(const net::HttpResponse& r) {
  auto j = ParseJson(r.body, "response");
  EXPECT_TRUE(j.has_value()) << r.body;
  return j ? *j : Json();
}

formats::MeasurementLog GoodLog() {
  return {{{.pcr = formats::kMoatPcr,
            .kind = formats::MeasurementKind::kOs,
            .name = "moat-linux",
            .version = "1.0",
            .digest = crypto::Sha256(std::string_view("os image 1.0"))},
           {.pcr = formats::kMoatPcr,
            .kind = formats::MeasurementKind::kApp,
            .name = "telemetry",
            .version = "1.2.0",
            .digest = crypto::Sha256(std::string_view("telemetry 1.2.0"))}}};
}

// A device: its swtpm, its key store, and moatd's attestor.
struct TpmDevice {
  std::filesystem::path dir;
  std::unique_ptr<rot::testing::Swtpm> tpm;
  std::unique_ptr<rot::Tpm2KeyStore> store;
  device::agent::Config config;
  std::unique_ptr<device::agent::Attestor> attestor;
  std::string id;
};

// How a hand-made round misbehaves (TpmAttestationTest::MakeRound).
struct Tweaks {
  bool certify = true;                          // send the TLS key's TPM2_Certify
  TpmDevice* certifier = nullptr;               // whose TPM certifies its own TLS key (d's)
  const crypto::PrivateKey* csr_key = nullptr;  // the CSR's key (default: d's TLS key)
};

class TpmAttestationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!rot::testing::Swtpm::Available()) GTEST_SKIP() << "swtpm/swtpm_setup not installed";
    auto dir = TempDir::Create("moat-tpm-attest");
    ASSERT_TRUE(dir.has_value());
    dir_.emplace(std::move(*dir));
    InitOptions init{.data_dir = dir_->path() / "data", .port = 0};
    std::ostringstream progress;
    ASSERT_TRUE(InitDataDir(init, clock_, random_, progress).has_value());
    auto service =
        Service::Start({.data_dir = init.data_dir, .port = 0, .threads = 2}, clock_, random_);
    ASSERT_TRUE(service.has_value()) << service.error().message();
    service_ = std::move(*service);
    auto config =
        formats::ParseOperatorConfig(*ReadFile(init.data_dir / "admin.moat.json", 1 << 20));
    ASSERT_TRUE(config.has_value());
    root_ = *crypto::Certificate::FromPem(config->root_certificate_pem);
    auto chain = crypto::Certificate::ParsePemChain(config->certificate_pem);
    net::HttpsClientConfig c{.base_url = BaseUrl()};
    c.tls.server_roots = {*root_};
    c.tls.certificate = chain->front();
    c.tls.chain.assign(chain->begin() + 1, chain->end());
    c.tls.key = *crypto::PrivateKey::FromPem(config->private_key_pem);
    admin_ = std::move(*net::HttpsClient::Create(c));

    ASSERT_EQ(Admin("POST", "/api/v1/tenants", R"({"name":"acme"})").status, 201);
    for (const auto& [kind, name, content] : {std::tuple{"os", "moat-linux", "os image 1.0"},
                                              std::tuple{"app", "telemetry", "telemetry 1.2.0"}}) {
      Json body = {{"kind", kind},
                   {"name", name},
                   {"sha256", HexEncode(crypto::Sha256(std::string_view(content)))}};
      ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/reference-values", body.dump()).status, 201);
    }
    // The manufacturer CA: swtpm_setup's local CA (root and issuing CA in one file).
    auto issuer = ReadFile("/var/lib/swtpm-localca/issuercert.pem", 1 << 16);
    auto rootca = ReadFile("/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem", 1 << 16);
    ASSERT_TRUE(issuer && rootca);
    Json mca = {{"certificate", *issuer + *rootca}};
    auto added = Admin("POST", "/api/v1/manufacturer-cas", mca.dump());
    ASSERT_EQ(added.status, 201) << added.body;
    EXPECT_EQ(Parse(added)["added"].size(), 2u);
    auto listed = Admin("GET", "/api/v1/manufacturer-cas");
    EXPECT_EQ(Parse(listed)["manufacturer_cas"].size(), 2u) << listed.body;
  }

  std::string BaseUrl() const { return fmt::format("https://127.0.0.1:{}", service_->port()); }

  net::HttpResponse Admin(std::string_view method, std::string_view path,
                          std::string_view body = {}) {
    auto r = admin_->Send(method, path, body);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return r ? *r : net::HttpResponse{};
  }

  // Manufactures a device: a fresh swtpm, the store, the log measured into the TPM.
  void MakeDevice(TpmDevice& d, const std::string& name, bool fresh = true, bool ecc_ek = false) {
    d.dir = dir_->path() / name;
    if (!d.tpm) {
      auto tpm = rot::testing::Swtpm::Start(d.dir / "swtpm", fresh);
      ASSERT_TRUE(tpm.has_value()) << tpm.error().message();
      d.tpm = std::make_unique<rot::testing::Swtpm>(std::move(*tpm));
    }
    rot::Tpm2Options options{.dir = d.dir / "keys", .tcti = d.tpm->tcti()};
    if (ecc_ek) {
      options.ek_handle = 0x81010002;  // not persisted by swtpm_setup: recreated from L-2
      options.ek_certificate_nv_index = rot::kEccP256EkCertificateNvIndex;
    }
    auto store = rot::Tpm2KeyStore::Open(options);
    ASSERT_TRUE(store.has_value()) << store.error().message();
    d.store = std::move(*store);
    ASSERT_TRUE(d.store->EnsureKey(rot::kIdentityKeyLabel));
    ASSERT_TRUE(d.store->EnsureKey(rot::kTlsClientKeyLabel));
    d.id = d.store->GetEndorsementKey()->DeviceId();
    d.config.service_url = BaseUrl();
    d.config.state_dir = d.dir / "state";
    ASSERT_TRUE(MakeDirectories(d.config.state_dir, 0700));
    d.attestor = std::make_unique<device::agent::Attestor>(d.config, *d.store, real_clock_, *root_);
  }

  void Measure(TpmDevice& d, const formats::MeasurementLog& log) {
    for (const auto& m : log.entries) ASSERT_TRUE(d.store->Extend(m.pcr, m.digest));
  }

  // moat device register --ek-certificate, then claim.
  void RegisterAndClaim(const TpmDevice& d, const TpmDevice* ek_of = nullptr) {
    auto ek = (ek_of ? ek_of : &d)->store->GetEndorsementKey();
    ASSERT_TRUE(ek.has_value());
    // swtpm_setup dates the EK certificate "now", after this test's clock started.
    clock_.Set(std::chrono::system_clock::now() + 2s);
    Json body = {{"ek_certificate", crypto::CertificateDerToPem(ek->certificate)}};
    auto r = Admin("POST", "/api/v1/devices", body.dump());
    ASSERT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(Parse(r)["id"], ek->DeviceId()) << "the service derives the ID the device computes";
    ASSERT_EQ(
        Admin("POST", fmt::format("/api/v1/tenants/acme/devices/{}/claim", ek->DeviceId())).status,
        200);
  }

  // A connection as the device's bootstrap identity naming `id`.
  std::unique_ptr<net::HttpsClient> Bootstrap(TpmDevice& d, const std::string& id) {
    auto key = d.store->TlsKey(rot::kIdentityKeyLabel);
    auto now = std::chrono::system_clock::now();
    auto cert = crypto::SelfCertifiedDeviceCertificate(*key, now - 1h, now + 1h, id);
    net::HttpsClientConfig config{.base_url = BaseUrl()};
    config.tls.server_roots = {*root_};
    config.tls.certificate = *cert;
    config.tls.key = *key;
    return std::move(*net::HttpsClient::Create(config));
  }

  // One hand-made round (what Attestor does), with hooks to misbehave.
  struct Round {
    Json challenge;
    std::string body;  // the attestation request
  };
  Round MakeRound(TpmDevice& d, net::HttpsClient& c, const std::string& id,
                  const formats::MeasurementLog& log, bool activate = true,
                  const Tweaks& tweaks = {}) {
    Round round;
    Json req = {{"ak_tpm_public", Base64Encode(*d.store->AttestationKeyPublicArea(),
                                               Base64Alphabet::kUrl, Base64Padding::kWithout)}};
    auto ch = c.Send("POST", "/device/v1/attestation/challenge", req.dump());
    EXPECT_TRUE(ch.has_value());
    EXPECT_EQ(ch->status, 201) << ch->body;
    round.challenge = Parse(*ch);
    formats::AttestationEvidence e{
        .device_id = id,
        .nonce = *Base64Decode(round.challenge["nonce"].get<std::string>(), Base64Alphabet::kUrl,
                               Base64Padding::kWithout),
        .log = log,
        .os_version = "1.0",
        .format = formats::EvidenceFormat::kTpm2Quote};
    std::vector<uint8_t> secret(32, 0x5a);
    if (activate) {
      auto blob = Base64Decode(round.challenge["credential"]["credential_blob"].get<std::string>(),
                               Base64Alphabet::kUrl, Base64Padding::kWithout);
      auto enc = Base64Decode(round.challenge["credential"]["encrypted_secret"].get<std::string>(),
                              Base64Alphabet::kUrl, Base64Padding::kWithout);
      auto activated = d.store->ActivateCredential(*blob, *enc);
      EXPECT_TRUE(activated.has_value()) << activated.error().message();
      if (activated) secret = *activated;
    }
    auto proof = d.store->Attest(formats::AttestationSigningInput(e));
    EXPECT_TRUE(proof.has_value());
    e.signature = proof->signature;
    e.tpm2_quote = *proof->tpm2_quote;
    e.tpm2_quote->activated_secret = secret;
    if (tweaks.certify) {
      TpmDevice& certifier = tweaks.certifier ? *tweaks.certifier : d;
      auto certified = certifier.store->CertifyKey(rot::kTlsClientKeyLabel,
                                                   formats::CertifyQualifyingData(e.nonce));
      EXPECT_TRUE(certified.has_value()) << certified.error().message();
      if (certified) e.tpm2_quote->certify = *certified;
    }
    auto tls_key = d.store->TlsKey(rot::kTlsClientKeyLabel);
    auto csr = crypto::CertificateRequest::Create(tweaks.csr_key ? *tweaks.csr_key : *tls_key, id);
    round.body = Json{{"evidence", formats::ToJson(e)}, {"csr", csr->ToPem()}}.dump();
    return round;
  }

  FakeClock clock_{std::chrono::system_clock::now()};
  SystemClock real_clock_;
  SystemRandom random_;
  std::optional<TempDir> dir_;
  std::unique_ptr<Service> service_;
  std::optional<crypto::Certificate> root_;
  std::unique_ptr<net::HttpsClient> admin_;
};

TEST_F(TpmAttestationTest, EnrolAttestGetA24hCertificateAndUseItWithATpmHeldTlsKey) {
  TpmDevice d;
  MakeDevice(d, "dev");
  RegisterAndClaim(d);
  Measure(d, GoodLog());
  auto out = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_TRUE(out.has_value()) << out.error().message();
  EXPECT_TRUE(out->passed);
  ASSERT_TRUE(out->client.has_value());
  EXPECT_EQ(out->client->leaf().NotAfter() - out->client->leaf().NotBefore() > 23h, true);
  EXPECT_EQ(*crypto::DeviceIdFromCertificate(out->client->leaf()), d.id);
  // Now with the client certificate: TLS whose key (and CertificateVerify) is in the TPM.
  EXPECT_EQ(d.attestor->BestCredential(), device::agent::CredentialKind::kClient);
  auto c = d.attestor->Connect(/*certified_only=*/true);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  auto who = (*c)->Send("GET", "/device/v1/whoami");
  ASSERT_TRUE(who.has_value()) << who.error().message();
  ASSERT_EQ(who->status, 200) << who->body;
  EXPECT_EQ(Parse(*who)["credential"], "client");
  EXPECT_EQ(Parse(*who)["device_id"], d.id);
  // Another round over the client credential.
  auto again = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_TRUE(again->passed);
}

TEST_F(TpmAttestationTest, IdentitySurvivesRestartsAndATpmResetIsAnUnknownDevice) {
  TpmDevice d;
  MakeDevice(d, "dev");
  RegisterAndClaim(d);
  Measure(d, GoodLog());
  ASSERT_TRUE(d.attestor->AttestOnce(GoodLog(), "1.0").value().passed);
  const std::string id = d.id;
  // moatd and the TPM restart (power cycle: PCRs reset, measured again at boot).
  d.attestor.reset();
  d.store.reset();
  ASSERT_TRUE(d.tpm->Restart());
  MakeDevice(d, "dev");
  EXPECT_EQ(d.id, id);
  Measure(d, GoodLog());
  std::filesystem::remove_all(d.config.state_dir / "certificates");
  auto again = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_TRUE(again->passed);
  // A reset TPM (new owner and endorsement seeds): another EK, an unknown device.
  d.attestor.reset();
  d.store.reset();
  d.tpm.reset();
  std::filesystem::remove_all(d.dir);
  MakeDevice(d, "dev");
  EXPECT_NE(d.id, id);
  Measure(d, GoodLog());
  auto unknown = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.error().message().find("not registered"), std::string::npos)
      << unknown.error().message();
}

TEST_F(TpmAttestationTest, AModifiedAppImageGetsNoClientCertificateAndALyingLogIsRefused) {
  TpmDevice d;
  MakeDevice(d, "dev");
  RegisterAndClaim(d);
  formats::MeasurementLog modified = GoodLog();
  modified.entries[1].digest = crypto::Sha256(std::string_view("telemetry 1.2.0, patched"));
  Measure(d, modified);
  auto out = d.attestor->AttestOnce(modified, "1.0");
  ASSERT_TRUE(out.has_value()) << out.error().message();
  EXPECT_FALSE(out->passed);
  EXPECT_FALSE(out->client.has_value());
  // Claiming the good log while the TPM measured the modified image: the PCR gives it away.
  auto lie = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_FALSE(lie.has_value());
  EXPECT_NE(lie.error().message().find("does not replay"), std::string::npos)
      << lie.error().message();
}

TEST_F(TpmAttestationTest, AQuoteOverAnOldNonceIsRefused) {
  TpmDevice d;
  MakeDevice(d, "dev");
  RegisterAndClaim(d);
  Measure(d, GoodLog());
  auto c = Bootstrap(d, d.id);
  Round first = MakeRound(d, *c, d.id, GoodLog());
  auto ok = c->Send("POST", "/device/v1/attestation", first.body);
  ASSERT_EQ(ok->status, 200) << ok->body;
  // Replayed as is: the nonce is spent.
  auto replay = c->Send("POST", "/device/v1/attestation", first.body);
  EXPECT_EQ(replay->status, 400) << replay->body;
  EXPECT_NE(replay->body.find("invalid-nonce"), std::string::npos) << replay->body;
  // The old quote answering a new challenge (its nonce and secret swapped in).
  Round second = MakeRound(d, *c, d.id, GoodLog());
  Json old_body = Parse(net::HttpResponse{.status = 200, .body = first.body});
  Json new_body = Parse(net::HttpResponse{.status = 200, .body = second.body});
  Json forged = old_body;
  forged["evidence"]["nonce"] = new_body["evidence"]["nonce"];
  forged["evidence"]["tpm2_quote"]["activated_secret"] =
      new_body["evidence"]["tpm2_quote"]["activated_secret"];
  auto stale = c->Send("POST", "/device/v1/attestation", forged.dump());
  EXPECT_EQ(stale->status, 403) << stale->body;
  EXPECT_NE(stale->body.find("old nonce"), std::string::npos) << stale->body;
}

TEST_F(TpmAttestationTest, AnotherDevicesEkCertificateWithoutItsTpmFailsActivation) {
  TpmDevice victim, thief;
  MakeDevice(victim, "victim");
  MakeDevice(thief, "thief");
  RegisterAndClaim(victim);
  Measure(thief, GoodLog());
  // The thief claims the victim's ID (the EK certificate is public) with its own TPM.
  auto c = Bootstrap(thief, victim.id);
  Round round = MakeRound(thief, *c, victim.id, GoodLog(), /*activate=*/false);
  auto blob = Base64Decode(round.challenge["credential"]["credential_blob"].get<std::string>(),
                           Base64Alphabet::kUrl, Base64Padding::kWithout);
  auto enc = Base64Decode(round.challenge["credential"]["encrypted_secret"].get<std::string>(),
                          Base64Alphabet::kUrl, Base64Padding::kWithout);
  auto activated = thief.store->ActivateCredential(*blob, *enc);
  ASSERT_FALSE(activated.has_value()) << "only the victim's TPM holds that EK";
  EXPECT_EQ(activated.error().code(), ErrorCode::kVerificationFailed);
  // Answering with a guess instead.
  auto r = c->Send("POST", "/device/v1/attestation", round.body);
  EXPECT_EQ(r->status, 403) << r->body;
  EXPECT_NE(r->body.find("credential activation failed"), std::string::npos) << r->body;
}

// TPM2_Certify: the client certificate is issued only for a TLS key the activated AK certified,
// over this challenge's nonce, as a TPM-generated non-duplicable key.
TEST_F(TpmAttestationTest, TheClientCertificateIsOnlyForATlsKeyTheTpmCertified) {
  TpmDevice d, other;
  MakeDevice(d, "dev");
  MakeDevice(other, "other");
  RegisterAndClaim(d);
  Measure(d, GoodLog());
  auto c = Bootstrap(d, d.id);
  auto events = [&] {
    return Parse(Admin("GET", "/api/v1/tenants/acme/security-events"))["security_events"];
  };
  auto refused = [&](const Round& round, std::string_view why) {
    SCOPED_TRACE(why);
    const size_t before = events().size();
    auto r = c->Send("POST", "/device/v1/attestation", round.body);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 403) << r->body;
    EXPECT_NE(r->body.find("attestation-failed"), std::string::npos) << r->body;
    EXPECT_NE(r->body.find(why), std::string::npos) << r->body;
    EXPECT_EQ(r->body.find("BEGIN CERTIFICATE"), std::string::npos) << "no certificate at all";
    Json after = events();
    ASSERT_EQ(after.size(), before + 1) << after.dump();
    EXPECT_EQ(after[0]["kind"], "attestation.bad-certify") << after.dump();  // newest first
  };

  // Good: the certify is checked and passes (the other tests' rounds pass the same way).
  Round good = MakeRound(d, *c, d.id, GoodLog());
  EXPECT_TRUE(
      Parse(net::HttpResponse{.body = good.body})["evidence"]["tpm2_quote"].contains("certify"));
  auto ok = c->Send("POST", "/device/v1/attestation", good.body);
  ASSERT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(Parse(*ok)["result"], "passed");

  // A CSR for a software key while the TPM certified its own TLS key.
  auto outside = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  refused(MakeRound(d, *c, d.id, GoodLog(), true, {.csr_key = &outside}),
          "not the key the certificate request names");
  // The TLS key certified by another TPM's AK (and the CSR for that key).
  auto other_tls = other.store->TlsKey(rot::kTlsClientKeyLabel);
  ASSERT_TRUE(other_tls.has_value());
  refused(MakeRound(d, *c, d.id, GoodLog(), true, {.certifier = &other, .csr_key = &*other_tls}),
          "not the attestation key's");
  // No certify at all.
  refused(MakeRound(d, *c, d.id, GoodLog(), true, {.certify = false}),
          "no TPM2_Certify of the TLS key");
  // A certify from an earlier round (another nonce).
  Round next = MakeRound(d, *c, d.id, GoodLog());
  Json forged = Parse(net::HttpResponse{.body = next.body});
  forged["evidence"]["tpm2_quote"]["certify"] =
      Parse(net::HttpResponse{.body = good.body})["evidence"]["tpm2_quote"]["certify"];
  refused(Round{.challenge = next.challenge, .body = forged.dump()}, "old nonce");
}

// An ECC P-256 EK (template L-2): the service derives the device ID from the certificate's point
// and makes the credential by ECDH (KDFe) rather than RSA-OAEP. swtpm_setup certifies no P-256
// EK, so a test manufacturer CA certifies it here.
TEST_F(TpmAttestationTest, AnEccP256EkDeviceEnrolsAndAttests) {
  TpmDevice d;
  MakeDevice(d, "ecc", /*fresh=*/true, /*ecc_ek=*/true);
  auto ek = d.store->GetEndorsementKey();
  ASSERT_TRUE(ek.has_value()) << ek.error().message();
  auto ek_public = formats::ParseTpm2bPublic(ek->tpm_public);
  ASSERT_TRUE(ek_public.has_value());
  ASSERT_EQ(ek_public->type, formats::kTpmAlgEcc);
  auto point = formats::EccPoint(*ek_public);
  auto ek_key = crypto::PublicKey::FromRaw(crypto::KeyType::kEcdsaP256, *point);
  ASSERT_TRUE(ek_key.has_value());

  const auto now = std::chrono::system_clock::now();
  auto ca_key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto ca = crypto::SelfSignCertificate({.kind = crypto::CertificateProfile::Kind::kRootCa,
                                         .common_name = "Test TPM Manufacturer EK CA",
                                         .not_before = now - 1h,
                                         .not_after = now + 24h * 365},
                                        ca_key);
  ASSERT_TRUE(ca.has_value()) << ca.error().message();
  auto ek_cert = crypto::IssueCertificate(
      {.common_name = "EK", .not_before = now - 1h, .not_after = now + 24h * 365}, *ek_key, *ca,
      ca_key);
  ASSERT_TRUE(ek_cert.has_value()) << ek_cert.error().message();
  ASSERT_EQ(
      Admin("POST", "/api/v1/manufacturer-cas", Json{{"certificate", ca->ToPem()}}.dump()).status,
      201);
  auto r = Admin("POST", "/api/v1/devices", Json{{"ek_certificate", ek_cert->ToPem()}}.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r)["id"], d.id) << "the service derives the ID the device computes";
  ASSERT_EQ(Admin("POST", fmt::format("/api/v1/tenants/acme/devices/{}/claim", d.id)).status, 200);

  Measure(d, GoodLog());
  auto out = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_TRUE(out.has_value()) << out.error().message();
  EXPECT_TRUE(out->passed);
  ASSERT_TRUE(out->client.has_value());
  EXPECT_EQ(*crypto::DeviceIdFromCertificate(out->client->leaf()), d.id);
  // Another device's TPM cannot answer this EK's credential.
  TpmDevice thief;
  MakeDevice(thief, "thief", /*fresh=*/true, /*ecc_ek=*/true);
  Measure(thief, GoodLog());
  auto c = Bootstrap(thief, d.id);
  Round round = MakeRound(thief, *c, d.id, GoodLog(), /*activate=*/false);
  auto blob = Base64Decode(round.challenge["credential"]["credential_blob"].get<std::string>(),
                           Base64Alphabet::kUrl, Base64Padding::kWithout);
  auto enc = Base64Decode(round.challenge["credential"]["encrypted_secret"].get<std::string>(),
                          Base64Alphabet::kUrl, Base64Padding::kWithout);
  auto activated = thief.store->ActivateCredential(*blob, *enc);
  ASSERT_FALSE(activated.has_value());
  EXPECT_EQ(activated.error().code(), ErrorCode::kVerificationFailed);
}

// Self-certified certificates may name any device ID (a TPM device's is not its key's), so the
// service checks the key of a device registered by public key: an impostor naming it is refused.
TEST_F(TpmAttestationTest, ASelfCertifiedCertificateNamingAnotherKeysDeviceIsRefused) {
  auto real = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  const std::string id = real.public_key().FingerprintHex();
  ASSERT_EQ(Admin("POST", "/api/v1/devices", Json{{"public_key", real.public_key().ToPem()}}.dump())
                .status,
            201);
  ASSERT_EQ(Admin("POST", fmt::format("/api/v1/tenants/acme/devices/{}/claim", id)).status, 200);
  auto impostor = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto now = std::chrono::system_clock::now();
  for (const auto* key : {&real, &impostor}) {
    net::HttpsClientConfig config{.base_url = BaseUrl()};
    config.tls.server_roots = {*root_};
    config.tls.certificate = *crypto::SelfCertifiedDeviceCertificate(*key, now - 1h, now + 1h, id);
    config.tls.key = *key;
    auto c = std::move(*net::HttpsClient::Create(config));
    auto r = c->Send("POST", "/device/v1/attestation/challenge");
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_EQ(r->status, key == &real ? 201 : 403) << r->body;
  }
}

// A PCR policy for the device's tenant: a boot PCR value the TPM does not hold withholds the
// client certificate; a policy naming what it holds gives it back.
TEST_F(TpmAttestationTest, APcrPolicyDecidesTheClientCertificate) {
  TpmDevice d;
  MakeDevice(d, "dev");
  RegisterAndClaim(d);
  Measure(d, GoodLog());
  Json wrong = {{"pcr", 0}, {"sha256", std::string(64, 'a')}, {"comment", "golden firmware"}};
  auto added = Admin("POST", "/api/v1/tenants/acme/pcr-policies", wrong.dump());
  ASSERT_EQ(added.status, 201) << added.body;
  auto out = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_TRUE(out.has_value()) << out.error().message();
  EXPECT_FALSE(out->passed);
  ASSERT_FALSE(out->failures.empty());
  EXPECT_NE(out->failures.front().find("PCR 0"), std::string::npos) << out->failures.front();
  // PCR 0 of a swtpm nobody booted: all zeros.
  Json right = {{"pcr", 0}, {"sha256", std::string(64, '0')}};
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/pcr-policies", right.dump()).status, 201);
  auto again = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_TRUE(again->passed);
  auto listed = Admin("GET", "/api/v1/tenants/acme/pcr-policies");
  EXPECT_EQ(Parse(listed)["pcr_policies"].size(), 2u) << listed.body;

  // A policy for the device's group, named PRODUCT/GROUP: applies once the device is in it,
  // and not to the tenant's other groups.
  ASSERT_EQ(Admin("POST", "/api/v1/tenants/acme/products", R"({"name":"Thermostat"})").status, 201);
  Json pin = {
      {"pcr", 7}, {"sha256", std::string(64, 'b')}, {"device_group", "Thermostat/Field Test"}};
  auto grouped = Admin("POST", "/api/v1/tenants/acme/pcr-policies", pin.dump());
  ASSERT_EQ(grouped.status, 201) << grouped.body;
  EXPECT_EQ(Parse(grouped)["product"], "Thermostat");
  EXPECT_EQ(Parse(grouped)["device_group"], "Field Test");
  EXPECT_TRUE(d.attestor->AttestOnce(GoodLog(), "1.0")->passed) << "not in that group yet";
  auto moved = Admin("PATCH", fmt::format("/api/v1/tenants/acme/devices/{}", d.id),
                     R"({"device_group":"Thermostat/Field Test"})");
  ASSERT_EQ(moved.status, 200) << moved.body;
  auto pinned = d.attestor->AttestOnce(GoodLog(), "1.0");
  ASSERT_TRUE(pinned.has_value()) << pinned.error().message();
  EXPECT_FALSE(pinned->passed);
  ASSERT_FALSE(pinned->failures.empty());
  EXPECT_NE(pinned->failures.front().find("PCR 7"), std::string::npos) << pinned->failures.front();
  listed = Admin("GET", "/api/v1/tenants/acme/pcr-policies");
  EXPECT_NE(listed.body.find("\"device_group\":\"Field Test\""), std::string::npos) << listed.body;
  // An unknown group name is 404 naming it.
  pin["device_group"] = "Thermostat/Nope";
  auto unknown = Admin("POST", "/api/v1/tenants/acme/pcr-policies", pin.dump());
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_NE(unknown.body.find("Thermostat/Nope"), std::string::npos) << unknown.body;
}

}  // namespace
}  // namespace moat::service
