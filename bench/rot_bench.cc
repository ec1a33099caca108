// Hardware-root-of-trust throughput (issue 8): TPM-backed signatures, quotes and TLS handshakes
// on a swtpm this program starts, PKCS#11 signatures and handshakes on a SoftHSM2 token, and a
// software-key handshake against the same openssl s_server as the reference in the same run.
// Each TLS iteration is a new connection with a full TLS 1.3 handshake and one GET (s_server
// -www), the client certificate's CertificateVerify signed by the store. Times are wall-clock
// (UseRealTime): the TPM and the server are other processes, so CPU time would flatter us.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>

#include "core/encoding.h"
#include "core/file.h"
#include "rot/pkcs11_key_store.h"
#include "rot/testing/swtpm.h"
#include "rot/testing/tls_peer.h"
#include "rot/tpm2_key_store.h"

namespace moat::rot {
namespace {

struct World {
  std::unique_ptr<TempDir> tmp;
  std::unique_ptr<testing::Swtpm> tpm;
  std::unique_ptr<Tpm2KeyStore> tpm_store;
  std::unique_ptr<Pkcs11KeyStore> p11_store;
  std::unique_ptr<testing::OpenSslServer> server;
  std::string error;
};

World* g_world = nullptr;

}  // namespace

// Stops swtpm and s_server (they would outlive the program otherwise) and closes the stores.
// Called from main, not atexit: SoftHSM2 tears itself down in exit handlers of its own.
void DestroyWorld() {
  delete g_world;
  g_world = nullptr;
}

namespace {

World& TheWorld() {
  static World* w = [] {
    auto* world = new World();
    g_world = world;
    auto fail = [world](const Error& e) {
      world->error = e.message();
      return world;
    };
    auto tmp = TempDir::Create("moat-rot-bench");
    if (!tmp) return fail(tmp.error());
    world->tmp = std::make_unique<TempDir>(std::move(*tmp));
    auto server = testing::OpenSslServer::Start(world->tmp->path() / "s_server");
    if (!server) return fail(server.error());
    world->server = std::move(*server);
    if (testing::Swtpm::Available()) {
      auto tpm = testing::Swtpm::Start(world->tmp->path() / "swtpm");
      if (!tpm) return fail(tpm.error());
      world->tpm = std::make_unique<testing::Swtpm>(std::move(*tpm));
      auto store = Tpm2KeyStore::Open({.dir = world->tmp->path() / "tpm", .tcti = world->tpm->tcti()});
      if (!store) return fail(store.error());
      world->tpm_store = std::move(*store);
      (void)world->tpm_store->EnsureKey(kIdentityKeyLabel);
      (void)world->tpm_store->EnsureKey(kTlsClientKeyLabel);
    }
    if (testing::SoftHsmAvailable()) {
      auto token = testing::InitSoftHsm(world->tmp->path() / "softhsm");
      if (!token) return fail(token.error());
      auto store = Pkcs11KeyStore::Open(
          {.module = token->module, .token_label = token->label, .pin_file = token->pin_file});
      if (!store) return fail(store.error());
      world->p11_store = std::move(*store);
      (void)world->p11_store->EnsureKey(kTlsClientKeyLabel);
    }
    return world;
  }();
  return *w;
}

void SignLoop(benchmark::State& state, KeyStore* store) {
  if (store == nullptr) {
    state.SkipWithError(TheWorld().error.empty() ? "simulator not installed"
                                                 : TheWorld().error.c_str());
    return;
  }
  auto digest = crypto::Sha256("bench");
  for (auto _ : state) {
    auto sig = store->SignDigest(kTlsClientKeyLabel, digest);
    if (!sig) state.SkipWithError(sig.error().message().c_str());
  }
  state.SetItemsProcessed(state.iterations());
}

void HandshakeLoop(benchmark::State& state, Result<crypto::PrivateKey> key) {
  World& w = TheWorld();
  if (!key) {
    state.SkipWithError(key.error().message().c_str());
    return;
  }
  auto client = w.server->ClientFor(*key);
  if (!client) {
    state.SkipWithError(client.error().message().c_str());
    return;
  }
  for (auto _ : state) {
    auto done = w.server->Handshake(**client);
    if (!done) state.SkipWithError(done.error().message().c_str());
  }
  state.SetItemsProcessed(state.iterations());
}

Result<crypto::PrivateKey> TlsKeyOf(KeyStore* store) {
  if (store == nullptr) return Fail(ErrorCode::kUnavailable, "simulator not installed");
  return store->TlsKey(kTlsClientKeyLabel);
}

void BM_Tpm2Sign(benchmark::State& state) { SignLoop(state, TheWorld().tpm_store.get()); }
void BM_Pkcs11Sign(benchmark::State& state) { SignLoop(state, TheWorld().p11_store.get()); }

void BM_Tpm2Quote(benchmark::State& state) {
  auto* store = TheWorld().tpm_store.get();
  if (store == nullptr) {
    state.SkipWithError("swtpm not installed");
    return;
  }
  std::vector<uint8_t> input(96, 7);
  for (auto _ : state) {
    auto proof = store->Attest(input);
    if (!proof) state.SkipWithError(proof.error().message().c_str());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_TlsHandshake_Tpm2(benchmark::State& state) {
  HandshakeLoop(state, TlsKeyOf(TheWorld().tpm_store.get()));
}
void BM_TlsHandshake_Pkcs11(benchmark::State& state) {
  HandshakeLoop(state, TlsKeyOf(TheWorld().p11_store.get()));
}
void BM_TlsHandshake_SoftwareKey(benchmark::State& state) {
  HandshakeLoop(state, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
}

BENCHMARK(BM_Tpm2Sign)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK(BM_Tpm2Quote)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK(BM_Pkcs11Sign)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK(BM_TlsHandshake_SoftwareKey)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK(BM_TlsHandshake_Tpm2)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK(BM_TlsHandshake_Pkcs11)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

}  // namespace
}  // namespace moat::rot

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  moat::rot::DestroyWorld();
  benchmark::Shutdown();
  return 0;
}
