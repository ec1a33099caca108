// Message digests (SHA-256, SHA-512), one-shot and streaming.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat::crypto {

using Sha256Digest = std::array<uint8_t, 32>;
using Sha512Digest = std::array<uint8_t, 64>;

enum class DigestAlgorithm { kSha256, kSha512 };

// Streaming digest. Not thread-safe; one instance per stream.
class Hasher {
 public:
  static Hasher Create(DigestAlgorithm algorithm);
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Update(std::span<const uint8_t> data);
  void Update(std::string_view data);
  // Returns the digest (32 or 64 bytes). The hasher must not be used afterwards.
  std::vector<uint8_t> Finish();

  size_t digest_size() const;

 private:
  struct State;
  explicit Hasher(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

Sha256Digest Sha256(std::span<const uint8_t> data);
Sha256Digest Sha256(std::string_view data);
// SHA-256 of a file of any size, read in 1 MiB pieces (kIo naming the path on failure).
Result<Sha256Digest> Sha256OfFile(const std::filesystem::path& path);
Sha512Digest Sha512(std::span<const uint8_t> data);

// PCR semantics (TPM 2.0, SHA-256 bank): the new register value SHA-256(value || digest).
Sha256Digest ExtendPcr(const Sha256Digest& value, const Sha256Digest& digest);

}  // namespace moat::crypto
