// Attestation round trips per second (issue 8): moatd's Attestor against an in-process
// moat-service on loopback (mutual TLS, SQLite), one device.
//   BM_AttestationRoundTrip_Tpm2: a swtpm device. One iteration = challenge naming the AK
//     (service: EK chain check + MakeCredential), TPM2_ActivateCredential, TPM2_Quote (+ identity
//     signature, PCR read), CSR signed in the TPM, service verification (quote, activation, log
//     replay, reference values) and issue of both certificates, device checks and saves them.
//     Over the client credential, so each round's TLS handshake is signed in the TPM too.
//   BM_AttestationRoundTrip_Software: the same round with the software store (the reference).
// Wall-clock times (UseRealTime): swtpm is another process.
#include <benchmark/benchmark.h>

#include <sstream>

#include "core/clock.h"
#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/random.h"
#include "crypto/tpm_primitives.h"
#include "device/agent/attestor.h"
#include "formats/operator_config.h"
#include "net/https_client.h"
#include "rot/software_key_store.h"
#include "rot/testing/swtpm.h"
#include "rot/tpm2_key_store.h"
#include "service/service.h"

namespace moat {
namespace {

formats::MeasurementLog Log() {
  return {{{.pcr = formats::kMoatPcr,
            .kind = formats::MeasurementKind::kOs,
            .name = "moat-linux",
            .version = "1.0",
            .digest = crypto::Sha256(std::string_view("os image 1.0"))}}};
}

struct World {
  SystemClock clock;
  SystemRandom random;
  std::unique_ptr<TempDir> tmp;
  std::unique_ptr<service::Service> service;
  std::optional<crypto::Certificate> root;
  std::unique_ptr<net::HttpsClient> admin;
  std::unique_ptr<rot::testing::Swtpm> tpm;
  std::unique_ptr<rot::KeyStore> tpm_store, sw_store;
  device::agent::Config tpm_config, sw_config;
  std::unique_ptr<device::agent::Attestor> tpm_attestor, sw_attestor;
  std::string error;

  Result<void> Admin(std::string_view method, std::string_view path, const Json& body, int want) {
    MOAT_ASSIGN_OR_RETURN(auto r, admin->Send(method, path, body.is_null() ? "" : body.dump()));
    if (r.status != want) return Fail(ErrorCode::kInternal, "{} {}: {}", method, path, r.body);
    return Ok();
  }

  Result<void> Build() {
    MOAT_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("moat-tpm-attest-bench"));
    tmp = std::make_unique<TempDir>(std::move(dir));
    service::InitOptions init{.data_dir = tmp->path() / "data", .port = 0};
    std::ostringstream progress;
    MOAT_TRY(service::InitDataDir(init, clock, random, progress));
    MOAT_ASSIGN_OR_RETURN(
        service, service::Service::Start({.data_dir = init.data_dir, .port = 0, .threads = 2},
                                         clock, random));
    MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(init.data_dir / "admin.moat.json", 1 << 20));
    MOAT_ASSIGN_OR_RETURN(auto op, formats::ParseOperatorConfig(text));
    MOAT_ASSIGN_OR_RETURN(root, crypto::Certificate::FromPem(op.root_certificate_pem));
    MOAT_ASSIGN_OR_RETURN(auto chain, crypto::Certificate::ParsePemChain(op.certificate_pem));
    const std::string url = fmt::format("https://127.0.0.1:{}", service->port());
    net::HttpsClientConfig c{.base_url = url};
    c.tls.server_roots = {*root};
    c.tls.certificate = chain.front();
    c.tls.chain.assign(chain.begin() + 1, chain.end());
    MOAT_ASSIGN_OR_RETURN(c.tls.key, crypto::PrivateKey::FromPem(op.private_key_pem));
    MOAT_ASSIGN_OR_RETURN(admin, net::HttpsClient::Create(c));
    MOAT_TRY(Admin("POST", "/api/v1/tenants", Json{{"name", "acme"}}, 201));
    MOAT_TRY(Admin(
        "POST", "/api/v1/tenants/acme/reference-values",
        Json{
            {"kind", "os"}, {"name", "moat-linux"}, {"sha256", HexEncode(Log().entries[0].digest)}},
        201));

    // The software device.
    MOAT_ASSIGN_OR_RETURN(
        auto sw, rot::SoftwareKeyStore::Open(tmp->path() / "sw-keys", rot::WarningOutput::kSilent));
    sw_store = std::move(sw);
    MOAT_ASSIGN_OR_RETURN(auto id_key, sw_store->EnsureKey(rot::kIdentityKeyLabel));
    MOAT_TRY(sw_store->EnsureKey(rot::kTlsClientKeyLabel));
    MOAT_TRY(Admin("POST", "/api/v1/devices", Json{{"public_key", id_key.ToPem()}}, 201));
    MOAT_TRY(Admin("POST",
                   fmt::format("/api/v1/tenants/acme/devices/{}/claim", rot::DeviceIdOf(id_key)),
                   Json(), 200));
    sw_config.service_url = url;
    sw_config.state_dir = tmp->path() / "sw-state";
    MOAT_TRY(MakeDirectories(sw_config.state_dir, 0700));
    sw_attestor = std::make_unique<device::agent::Attestor>(sw_config, *sw_store, clock, *root);

    // The TPM device.
    if (!rot::testing::Swtpm::Available()) return Ok();
    MOAT_ASSIGN_OR_RETURN(auto t, rot::testing::Swtpm::Start(tmp->path() / "swtpm"));
    tpm = std::make_unique<rot::testing::Swtpm>(std::move(t));
    MOAT_ASSIGN_OR_RETURN(
        auto ts, rot::Tpm2KeyStore::Open({.dir = tmp->path() / "tpm-keys", .tcti = tpm->tcti()}));
    MOAT_ASSIGN_OR_RETURN(rot::EndorsementKey ek, ts->GetEndorsementKey());
    tpm_store = std::move(ts);
    MOAT_TRY(tpm_store->EnsureKey(rot::kIdentityKeyLabel));
    MOAT_TRY(tpm_store->EnsureKey(rot::kTlsClientKeyLabel));
    for (const auto& m : Log().entries) MOAT_TRY(tpm_store->Extend(m.pcr, m.digest));
    MOAT_ASSIGN_OR_RETURN(std::string issuer,
                          ReadFile("/var/lib/swtpm-localca/issuercert.pem", 1 << 16));
    MOAT_TRY(Admin("POST", "/api/v1/manufacturer-cas", Json{{"certificate", issuer}}, 201));
    MOAT_TRY(Admin("POST", "/api/v1/devices",
                   Json{{"ek_certificate", crypto::CertificateDerToPem(ek.certificate)}}, 201));
    MOAT_TRY(Admin("POST", fmt::format("/api/v1/tenants/acme/devices/{}/claim", ek.DeviceId()),
                   Json(), 200));
    tpm_config.service_url = url;
    tpm_config.state_dir = tmp->path() / "tpm-state";
    MOAT_TRY(MakeDirectories(tpm_config.state_dir, 0700));
    tpm_attestor = std::make_unique<device::agent::Attestor>(tpm_config, *tpm_store, clock, *root);
    return Ok();
  }
};

World* g_world = nullptr;

World& TheWorld() {
  if (g_world == nullptr) {
    g_world = new World;
    if (auto built = g_world->Build(); !built) g_world->error = built.error().message();
  }
  return *g_world;
}

void RoundTrips(benchmark::State& state, device::agent::Attestor* attestor) {
  World& w = TheWorld();
  if (!w.error.empty()) return state.SkipWithError(w.error.c_str());
  if (attestor == nullptr) return state.SkipWithError("swtpm not installed");
  // The first round uses the identity credential; then the client certificate, as moatd does.
  if (auto first = attestor->AttestOnce(Log(), "1.0"); !first || !first->passed) {
    return state.SkipWithError(first ? "first round did not pass"
                                     : first.error().message().c_str());
  }
  for (auto _ : state) {
    auto out = attestor->AttestOnce(Log(), "1.0");
    if (!out || !out->passed) {
      return state.SkipWithError(out ? "round did not pass" : out.error().message().c_str());
    }
  }
  state.counters["rounds_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_AttestationRoundTrip_Tpm2(benchmark::State& state) {
  RoundTrips(state, TheWorld().tpm_attestor.get());
}
void BM_AttestationRoundTrip_Software(benchmark::State& state) {
  RoundTrips(state, TheWorld().sw_attestor.get());
}
BENCHMARK(BM_AttestationRoundTrip_Tpm2)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();
BENCHMARK(BM_AttestationRoundTrip_Software)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0)
    ->UseRealTime();

}  // namespace
}  // namespace moat

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  delete moat::g_world;  // stops the service and swtpm
  return 0;
}
