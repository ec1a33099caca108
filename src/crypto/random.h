// Secure randomness from OpenSSL's DRBG, and constant-time comparison.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/random.h"

namespace moat::crypto {

// Random bytes from OpenSSL's CSPRNG (RAND_bytes). Aborts if it cannot be seeded.
std::vector<uint8_t> RandomBytes(size_t n);

// A moat::Random backed by RAND_bytes, for code that takes an injectable Random&.
class OpenSslRandom final : public moat::Random {
 public:
  void Fill(std::span<uint8_t> out) override;
};

// SECURITY: compares in time that depends only on the lengths, never on the contents.
// Use for every comparison of MACs, digests, nonces and other secret-derived values.
bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b);

// Overwrites `data` in a way the compiler cannot elide (OPENSSL_cleanse).
void Wipe(std::span<uint8_t> data);
// The same for text holding a secret (a PEM key, a config with a key in it).
void Wipe(std::string& text);

}  // namespace moat::crypto
