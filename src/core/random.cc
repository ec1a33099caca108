#include "core/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace moat {

uint64_t Random::NextU64() {
  uint8_t b[8];
  Fill(b);
  uint64_t v = 0;
  for (uint8_t x : b) v = (v << 8) | x;
  return v;
}

uint64_t Random::Uniform(uint64_t bound) {
  if (bound <= 1) return 0;
  // Rejection sampling: discard the top partial range to avoid modulo bias.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);
  for (;;) {
    uint64_t v = NextU64();
    if (v < limit) return v % bound;
  }
}

std::string Random::NewUuid() {
  uint8_t b[16];
  Fill(b);
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);
  return fmt::format(
      "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
      "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
      b[15]);
}

void SystemRandom::Fill(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // SECURITY: continuing without randomness would produce predictable keys and nonces.
      std::fprintf(stderr, "moat: getrandom failed (errno %d); aborting\n", errno);
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
}

void FakeRandom::Fill(std::span<uint8_t> out) {
  for (auto& byte : out) {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    byte = static_cast<uint8_t>(z ^ (z >> 31));
  }
}

}  // namespace moat
