#include "crypto/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "crypto/openssl_util.h"

namespace moat::crypto {

void OpenSslRandom::Fill(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    int chunk = static_cast<int>(std::min<size_t>(out.size() - done, INT_MAX));
    if (RAND_bytes(out.data() + done, chunk) != 1) {
      // SECURITY: never continue with predictable bytes.
      std::fprintf(stderr, "moat: RAND_bytes failed: %s\n", internal::OpenSslErrors().c_str());
      std::abort();
    }
    done += static_cast<size_t>(chunk);
  }
}

std::vector<uint8_t> RandomBytes(size_t n) {
  std::vector<uint8_t> out(n);
  OpenSslRandom().Fill(out);
  return out;
}

bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void Wipe(std::span<uint8_t> data) {
  if (!data.empty()) OPENSSL_cleanse(data.data(), data.size());
}

void Wipe(std::string& text) {
  if (!text.empty()) OPENSSL_cleanse(text.data(), text.size());
}

}  // namespace moat::crypto
