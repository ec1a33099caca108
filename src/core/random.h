// Injectable randomness. Production code takes a Random& so tests can make it deterministic.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace moat {

class Random {
 public:
  virtual ~Random() = default;
  // Fills `out` with random bytes. SystemRandom never fails (it aborts if the kernel's
  // CSPRNG is unusable, which is not a recoverable state for a security product).
  virtual void Fill(std::span<uint8_t> out) = 0;

  uint64_t NextU64();
  // Uniform in [0, bound) without modulo bias; bound > 0.
  uint64_t Uniform(uint64_t bound);
  // A random RFC 4122 version-4 UUID in lowercase text form.
  std::string NewUuid();
};

// The kernel's CSPRNG through getrandom(2).
class SystemRandom final : public Random {
 public:
  void Fill(std::span<uint8_t> out) override;
};

// Deterministic generator (SplitMix64) for tests only. Not cryptographically secure.
class FakeRandom final : public Random {
 public:
  explicit FakeRandom(uint64_t seed = 1) : state_(seed) {}
  void Fill(std::span<uint8_t> out) override;

 private:
  uint64_t state_;
};

}  // namespace moat
