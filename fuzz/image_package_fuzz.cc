// Fuzzes the image package reader and the file tree parser.
//
// Random bytes almost never carry a valid signature, so most of the reader would stay out of
// reach behind the signature check. The second half of each run therefore treats the input as
// a signed region, signs it with a key generated once, and verifies that: this drives the
// code that runs only after verification (header JSON, manifest, payload bounds, zstd frame
// checks, decompression and the file tree) with attacker-shaped but validly signed bytes —
// the situation of a compromised or buggy signer.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "crypto/digest.h"
#include "crypto/key.h"
#include "formats/file_tree.h"
#include "formats/image_package.h"

namespace {

using moat::formats::FileTreeLimits;
using moat::formats::ImagePackageLimits;

struct Fixture {
  moat::crypto::PrivateKey key =
      *moat::crypto::PrivateKey::Generate(moat::crypto::KeyType::kEd25519);
  std::vector<moat::crypto::PublicKey> trusted = {key.public_key()};
  // Small enough that a lying header cannot make a run allocate gigabytes.
  ImagePackageLimits limits{
      .max_payload_size = 1 << 20,
      .tree = FileTreeLimits{.max_total_bytes = 1 << 20, .max_file_bytes = 1 << 20}};
};

const Fixture& GetFixture() {
  static const Fixture* fixture = new Fixture();
  return *fixture;
}

// Appends a signature block and footer as docs/formats/image-package.md describes them.
std::vector<uint8_t> SignAsRegion(std::span<const uint8_t> region, const Fixture& f) {
  moat::crypto::Sha256Digest digest = moat::crypto::Sha256(region);
  std::string input("moat image package v1\0", 22);
  input.append(digest.begin(), digest.end());
  auto sig = f.key.Sign(input);
  if (!sig) __builtin_trap();
  std::vector<uint8_t> out(region.begin(), region.end());
  out.push_back(1);  // signature block version
  out.push_back(2);  // ed25519
  auto key_id = f.key.public_key().Fingerprint();
  out.insert(out.end(), key_id.begin(), key_id.end());
  out.push_back(static_cast<uint8_t>(sig->size() >> 8));
  out.push_back(static_cast<uint8_t>(sig->size()));
  out.insert(out.end(), sig->begin(), sig->end());
  uint32_t block_len = static_cast<uint32_t>(36 + sig->size());
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<uint8_t>(block_len >> shift));
  for (int i = 0; i < 4; ++i) out.push_back(0);
  const char magic[8] = {'M', 'O', 'A', 'T', 'S', 'I', 'G', '\0'};
  out.insert(out.end(), magic, magic + 8);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& f = GetFixture();
  std::span<const uint8_t> input(data, size);

  (void)moat::formats::InspectUnverifiedImagePackage(input, f.limits);
  if (auto verified = moat::formats::VerifyImagePackage(input, f.trusted, f.limits)) {
    (void)verified->Files(f.limits.tree);
  }
  (void)moat::formats::ParseFileTree(input, f.limits.tree);

  std::vector<uint8_t> signed_package = SignAsRegion(input, f);
  auto verified = moat::formats::VerifyImagePackage(signed_package, f.trusted, f.limits);
  if (verified) {
    auto files = verified->Files(f.limits.tree);
    if (files) {
      // Whatever parses must serialize back to the same canonical bytes.
      auto again = moat::formats::SerializeFileTree(*files);
      if (!again || again->size() != verified->header().payload_size) __builtin_trap();
    }
  }
  // The inspector must agree with the verifier on a validly signed package.
  auto info = moat::formats::InspectUnverifiedImagePackage(signed_package, f.limits);
  if (info.has_value() != verified.has_value()) __builtin_trap();
  return 0;
}
