#include "rot/software_key_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "core/file.h"
#include "crypto/random.h"
#include "rot/private_dir.h"

namespace moat::rot {
namespace {

using internal::CheckPrivate;

constexpr size_t kMaxKeyFileBytes = 16 * 1024;

}  // namespace

Result<std::unique_ptr<SoftwareKeyStore>> SoftwareKeyStore::Open(const std::filesystem::path& dir,
                                                                 WarningOutput warning) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Fail(ErrnoError("mkdir", dir, errno));
  }
  MOAT_TRY(CheckPrivate(dir, /*is_dir=*/true));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".key") MOAT_TRY(CheckPrivate(entry.path(), false));
  }
  if (ec) return Fail(ErrorCode::kIo, "cannot list {}: {}", dir.string(), ec.message());
  if (warning == WarningOutput::kStderr) {
    std::fprintf(stderr,
                 "\n"
                 "  *****************************************************************\n"
                 "  **  WARNING: DEVELOPMENT ROOT OF TRUST (software key store)    **\n"
                 "  **  Device keys are files in %-34s **\n"
                 "  **  Anyone who can read them can impersonate this device.      **\n"
                 "  **  Use the TPM 2.0 or PKCS#11 key store on real devices.      **\n"
                 "  *****************************************************************\n\n",
                 dir.string().substr(0, 34).c_str());
  }
  return std::unique_ptr<SoftwareKeyStore>(new SoftwareKeyStore(dir));
}

Result<crypto::PrivateKey> SoftwareKeyStore::Load(std::string_view label) const {
  MOAT_TRY(ValidateKeyLabel(label));
  if (auto it = cache_.find(label); it != cache_.end()) return it->second;
  std::filesystem::path path = dir_ / (std::string(label) + ".key");
  if (::access(path.c_str(), F_OK) != 0) {
    return Fail(ErrorCode::kNotFound, "key store {}: no key '{}'", dir_.string(), label);
  }
  MOAT_TRY(CheckPrivate(path, false));
  MOAT_ASSIGN_OR_RETURN(std::string pem, ReadFile(path, kMaxKeyFileBytes));
  auto key = crypto::PrivateKey::FromPem(pem);
  crypto::Wipe(pem);
  if (!key) return Fail(key.error().WithContext(path.string()));
  if (key->type() != crypto::KeyType::kEcdsaP256) {
    return Fail(ErrorCode::kInvalidArgument, "{}: key store keys are P-256", path.string());
  }
  cache_.emplace(std::string(label), *key);
  return *key;
}

Result<crypto::PublicKey> SoftwareKeyStore::CreateKey(std::string_view label) {
  MOAT_TRY(ValidateKeyLabel(label));
  std::filesystem::path path = dir_ / (std::string(label) + ".key");
  MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey key,
                        crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
  MOAT_ASSIGN_OR_RETURN(crypto::SecretString pem, key.ToPem());
  // Exclusive: an existing key is never replaced, even by a racing process.
  auto written = AtomicWriteFile(path, pem.view(), {.mode = 0600, .exclusive = true});
  if (!written) {
    if (written.error().code() == ErrorCode::kAlreadyExists) {
      return Fail(ErrorCode::kAlreadyExists, "key store {}: key '{}' already exists", dir_.string(),
                  label);
    }
    return Fail(written.error());
  }
  cache_.emplace(std::string(label), key);
  return key.public_key();
}

Result<crypto::PublicKey> SoftwareKeyStore::GetPublicKey(std::string_view label) const {
  MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey key, Load(label));
  return key.public_key();
}

Result<std::vector<uint8_t>> SoftwareKeyStore::SignDigest(std::string_view label,
                                                          const crypto::Sha256Digest& digest) {
  MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey key, Load(label));
  return key.SignDigest(digest);
}

Result<crypto::PrivateKey> SoftwareKeyStore::TlsKey(std::string_view label) { return Load(label); }

Result<void> SoftwareKeyStore::Extend(uint32_t pcr, const crypto::Sha256Digest& digest) {
  return registers_.Extend(pcr, digest);
}

Result<std::map<uint32_t, crypto::Sha256Digest>> SoftwareKeyStore::ReadRegisters() const {
  return registers_.values();
}

Result<AttestationProof> SoftwareKeyStore::Attest(std::span<const uint8_t> signing_input) {
  AttestationProof proof;
  MOAT_ASSIGN_OR_RETURN(proof.signature, Sign(kIdentityKeyLabel, signing_input));
  return proof;
}

}  // namespace moat::rot
