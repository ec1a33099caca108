// SoftwareKeyStore: a DEVELOPMENT root of trust. Keys are PEM files in a root-owned 0700
// directory; anyone who can read that directory (root, a disk image, a backup) has the
// device's identity. It exists so Moat can run on a laptop or in CI; real devices use the
// TPM 2.0 or PKCS#11 stores. Open() prints a loud warning saying so.
//
// Layout of the directory:
//   <label>.key          P-256 private key, PKCS#8 PEM, mode 0600
// Registers live in memory: they reset when the process starts, as PCRs reset at boot.
#pragma once

#include <filesystem>
#include <map>
#include <memory>

#include "rot/key_store.h"

namespace moat::rot {

enum class WarningOutput { kStderr, kSilent };

class SoftwareKeyStore final : public KeyStore {
 public:
  // Opens (creating with mode 0700 if absent) `dir`. Refuses, with kPermissionDenied naming
  // the path and its mode, if the directory or any key file is accessible to group or others,
  // or is not owned by the current user. `warning` kSilent is for tests only.
  static Result<std::unique_ptr<SoftwareKeyStore>> Open(
      const std::filesystem::path& dir, WarningOutput warning = WarningOutput::kStderr);

  std::string_view backend() const override { return "software"; }
  Result<crypto::PublicKey> CreateKey(std::string_view label) override;
  Result<crypto::PublicKey> GetPublicKey(std::string_view label) const override;
  Result<std::vector<uint8_t>> SignDigest(std::string_view label,
                                          const crypto::Sha256Digest& digest) override;
  Result<crypto::PrivateKey> TlsKey(std::string_view label) override;
  Result<void> Extend(uint32_t pcr, const crypto::Sha256Digest& digest) override;
  Result<std::map<uint32_t, crypto::Sha256Digest>> ReadRegisters() const override;
  Result<AttestationProof> Attest(std::span<const uint8_t> signing_input) override;

 private:
  explicit SoftwareKeyStore(std::filesystem::path dir) : dir_(std::move(dir)) {}
  Result<crypto::PrivateKey> Load(std::string_view label) const;

  std::filesystem::path dir_;
  mutable std::map<std::string, crypto::PrivateKey, std::less<>> cache_;
  MemoryRegisters registers_;
};

}  // namespace moat::rot
