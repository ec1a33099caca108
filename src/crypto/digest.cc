#include "crypto/digest.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "crypto/openssl_util.h"

#include <fcntl.h>
#include <unistd.h>

#include "core/file.h"
#include "core/unique_fd.h"

namespace moat::crypto {

namespace {
// Digest failures on valid inputs mean a broken OpenSSL installation (e.g. a missing
// provider). That is not recoverable, and silently returning a wrong digest would be far
// worse than stopping.
[[noreturn]] void DigestFailed(const char* what) {
  std::fprintf(stderr, "moat: %s failed: %s\n", what, internal::OpenSslErrors().c_str());
  std::abort();
}
}  // namespace

struct Hasher::State {
  internal::EvpMdCtxPtr ctx;
  size_t size;
};

Hasher::Hasher(std::unique_ptr<State> state) : state_(std::move(state)) {}
Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

Hasher Hasher::Create(DigestAlgorithm algorithm) {
  const EVP_MD* md = algorithm == DigestAlgorithm::kSha256 ? EVP_sha256() : EVP_sha512();
  auto state = std::make_unique<State>();
  state->ctx.reset(EVP_MD_CTX_new());
  state->size = static_cast<size_t>(EVP_MD_get_size(md));
  if (!state->ctx || EVP_DigestInit_ex(state->ctx.get(), md, nullptr) != 1) {
    DigestFailed("EVP_DigestInit_ex");
  }
  return Hasher(std::move(state));
}

void Hasher::Update(std::span<const uint8_t> data) {
  if (EVP_DigestUpdate(state_->ctx.get(), data.data(), data.size()) != 1) {
    DigestFailed("EVP_DigestUpdate");
  }
}

void Hasher::Update(std::string_view data) {
  Update(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

std::vector<uint8_t> Hasher::Finish() {
  std::vector<uint8_t> out(state_->size);
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(state_->ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    DigestFailed("EVP_DigestFinal_ex");
  }
  return out;
}

size_t Hasher::digest_size() const { return state_->size; }

Sha256Digest Sha256(std::span<const uint8_t> data) {
  Sha256Digest out;
  if (EVP_Digest(data.data(), data.size(), out.data(), nullptr, EVP_sha256(), nullptr) != 1) {
    DigestFailed("EVP_Digest(sha256)");
  }
  return out;
}

Sha256Digest Sha256(std::string_view data) {
  return Sha256(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

Sha512Digest Sha512(std::span<const uint8_t> data) {
  Sha512Digest out;
  if (EVP_Digest(data.data(), data.size(), out.data(), nullptr, EVP_sha512(), nullptr) != 1) {
    DigestFailed("EVP_Digest(sha512)");
  }
  return out;
}

Sha256Digest ExtendPcr(const Sha256Digest& value, const Sha256Digest& digest) {
  std::array<uint8_t, 64> buf;
  std::copy(value.begin(), value.end(), buf.begin());
  std::copy(digest.begin(), digest.end(), buf.begin() + 32);
  return Sha256(buf);
}

Result<Sha256Digest> Sha256OfFile(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Fail(ErrnoError("open", path, errno));
  Hasher hasher = Hasher::Create(DigestAlgorithm::kSha256);
  std::vector<uint8_t> buffer(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoError("read", path, errno));
    }
    if (n == 0) break;
    hasher.Update(std::span<const uint8_t>(buffer.data(), static_cast<size_t>(n)));
  }
  const std::vector<uint8_t> digest = hasher.Finish();
  Sha256Digest out{};
  std::copy(digest.begin(), digest.end(), out.begin());
  return out;
}

}  // namespace moat::crypto
