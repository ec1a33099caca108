// Signing, verification, hashing and image-package verification throughput.
// Reference figures come from `openssl speed` in bench/run.sh, run in the same session.
#include <benchmark/benchmark.h>

#include <vector>

#include "core/random.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "formats/image_package.h"

namespace moat {
namespace {

std::vector<uint8_t> RandomData(size_t n) {
  std::vector<uint8_t> v(n);
  FakeRandom(7).Fill(v);
  return v;
}

void BM_Sign(benchmark::State& state, crypto::KeyType type) {
  auto key = *crypto::PrivateKey::Generate(type);
  auto msg = RandomData(64);
  for (auto _ : state) {
    auto sig = key.Sign(msg);
    benchmark::DoNotOptimize(sig);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Verify(benchmark::State& state, crypto::KeyType type) {
  auto key = *crypto::PrivateKey::Generate(type);
  auto pub = key.public_key();
  auto msg = RandomData(64);
  auto sig = *key.Sign(msg);
  for (auto _ : state) {
    auto ok = pub.Verify(msg, sig);
    if (!ok) state.SkipWithError("verification failed");
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK_CAPTURE(BM_Sign, ecdsa_p256, crypto::KeyType::kEcdsaP256);
BENCHMARK_CAPTURE(BM_Sign, ed25519, crypto::KeyType::kEd25519);
BENCHMARK_CAPTURE(BM_Verify, ecdsa_p256, crypto::KeyType::kEcdsaP256);
BENCHMARK_CAPTURE(BM_Verify, ed25519, crypto::KeyType::kEd25519);

void BM_Sha256_16MiB(benchmark::State& state) {
  auto data = RandomData(16 << 20);
  for (auto _ : state) {
    auto d = crypto::Sha256(data);
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(data.size()));
}
BENCHMARK(BM_Sha256_16MiB)->Unit(benchmark::kMillisecond);

// Verification of a signed 64 MiB image package (incompressible payload, so the package is
// ~64 MiB too). Measures VerifyImagePackage: footer, signature block, one SHA-256 pass over
// the signed region, signature check, header/manifest parse. Extraction is not included.
void BM_VerifyImagePackage_64MiB(benchmark::State& state) {
  auto key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  formats::ImagePackageHeader header;
  header.image_type = formats::ImageType::kApplication;
  header.component_id = *formats::Guid::Parse("6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10");
  header.image_id = *formats::Guid::Parse("11111111-2222-4333-8444-555555555555");
  header.version = "1.0.0";
  header.name = "bench";
  std::vector<formats::FileTreeEntry> files(2);
  files[0].kind = formats::FileTreeEntry::Kind::kDirectory;
  files[0].path = "bin";
  files[0].mode = 0755;
  files[1].kind = formats::FileTreeEntry::Kind::kFile;
  files[1].path = "bin/blob";
  files[1].mode = 0755;
  files[1].data = RandomData(64 << 20);
  std::string manifest =
      R"({"SchemaVersion":1,"Name":"bench","ComponentId":"6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10","EntryPoint":"/bin/blob","Capabilities":{}})";
  auto package = formats::BuildImagePackage(header, manifest, files, key, /*zstd_level=*/1);
  if (!package) {
    state.SkipWithError(package.error().message().c_str());
    return;
  }
  std::vector<crypto::PublicKey> trusted{key.public_key()};
  for (auto _ : state) {
    auto verified = formats::VerifyImagePackage(*package, trusted);
    if (!verified) state.SkipWithError(verified.error().message().c_str());
    benchmark::DoNotOptimize(verified);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(package->size()));
}
BENCHMARK(BM_VerifyImagePackage_64MiB)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moat

BENCHMARK_MAIN();
