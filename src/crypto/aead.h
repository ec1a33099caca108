// Authenticated encryption (AES-256-GCM) for secrets at rest, e.g. CA private keys that the
// service keeps in its database, wrapped under a master key that lives only in the data dir
// (or, later, in an HSM).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"

namespace moat::crypto {

using AeadKey = std::array<uint8_t, 32>;

// Returns nonce (12 random bytes) || ciphertext || tag (16 bytes). `associated_data` is
// authenticated but not encrypted: bind the sealed value to what it is (e.g. "tenant-ca:<id>")
// so a sealed blob cannot be swapped into another row.
Result<std::vector<uint8_t>> AeadSeal(const AeadKey& key, std::span<const uint8_t> plaintext,
                                      std::span<const uint8_t> associated_data);

// Fails with kVerificationFailed if the blob was modified, sealed under another key, or with
// other associated data.
Result<std::vector<uint8_t>> AeadOpen(const AeadKey& key, std::span<const uint8_t> sealed,
                                      std::span<const uint8_t> associated_data);

}  // namespace moat::crypto
