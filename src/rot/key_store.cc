#include "rot/key_store.h"

namespace moat::rot {

Result<void> ValidateKeyLabel(std::string_view label) {
  if (label.empty() || label.size() > 64 ||
      label.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") !=
          std::string_view::npos ||
      label.front() == '.') {
    return Fail(ErrorCode::kInvalidArgument,
                "key label '{}' must be 1..64 of a-z, 0-9, '.', '_', '-' and not start with '.'",
                label.substr(0, 80));
  }
  return Ok();
}

Result<crypto::PublicKey> KeyStore::EnsureKey(std::string_view label) {
  auto existing = GetPublicKey(label);
  if (existing || existing.error().code() != ErrorCode::kNotFound) return existing;
  return CreateKey(label);
}

Result<std::vector<uint8_t>> KeyStore::Sign(std::string_view label,
                                            std::span<const uint8_t> message) {
  return SignDigest(label, crypto::Sha256(message));
}

std::string DeviceIdOf(const crypto::PublicKey& identity_key) {
  return identity_key.FingerprintHex();
}

Result<void> MemoryRegisters::Extend(uint32_t pcr, const crypto::Sha256Digest& digest) {
  if (pcr > kMaxRegister) {
    return Fail(ErrorCode::kInvalidArgument, "register {} does not exist (0..{})", pcr,
                kMaxRegister);
  }
  auto [it, inserted] = values_.try_emplace(pcr, crypto::Sha256Digest{});
  it->second = crypto::ExtendPcr(it->second, digest);
  return Ok();
}

}  // namespace moat::rot
