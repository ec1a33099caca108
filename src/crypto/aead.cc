#include "crypto/aead.h"

#include <openssl/evp.h>

#include <climits>

#include "crypto/openssl_util.h"
#include "crypto/random.h"

namespace moat::crypto {
namespace {

constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;

using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, internal::Deleter<EVP_CIPHER_CTX_free>>;

}  // namespace

Result<std::vector<uint8_t>> AeadSeal(const AeadKey& key, std::span<const uint8_t> plaintext,
                                      std::span<const uint8_t> aad) {
  if (plaintext.size() > INT_MAX / 2 || aad.size() > INT_MAX / 2) {
    return Fail(ErrorCode::kLimitExceeded, "aead: input too large");
  }
  std::vector<uint8_t> out(kNonceBytes + plaintext.size() + kTagBytes);
  OpenSslRandom().Fill(std::span(out.data(), kNonceBytes));
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), out.data()) != 1 ||
      (!aad.empty() && EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad.data(),
                                         static_cast<int>(aad.size())) != 1) ||
      EVP_EncryptUpdate(ctx.get(), out.data() + kNonceBytes, &len, plaintext.data(),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + kNonceBytes + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          out.data() + kNonceBytes + plaintext.size()) != 1) {
    return Fail(internal::OpenSslError(ErrorCode::kInternal, "aes-256-gcm seal"));
  }
  return out;
}

Result<std::vector<uint8_t>> AeadOpen(const AeadKey& key, std::span<const uint8_t> sealed,
                                      std::span<const uint8_t> aad) {
  if (sealed.size() < kNonceBytes + kTagBytes || sealed.size() > INT_MAX / 2 ||
      aad.size() > INT_MAX / 2) {
    return Fail(ErrorCode::kInvalidArgument, "aead: sealed value of {} bytes is malformed",
                sealed.size());
  }
  size_t n = sealed.size() - kNonceBytes - kTagBytes;
  std::vector<uint8_t> out(n);
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), sealed.data()) != 1 ||
      (!aad.empty() && EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data(),
                                         static_cast<int>(aad.size())) != 1) ||
      EVP_DecryptUpdate(ctx.get(), out.data(), &len, sealed.data() + kNonceBytes,
                        static_cast<int>(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes,
                          const_cast<uint8_t*>(sealed.data() + kNonceBytes + n)) != 1) {
    return Fail(internal::OpenSslError(ErrorCode::kInternal, "aes-256-gcm open"));
  }
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + len, &len) != 1) {
    internal::OpenSslErrors();  // clear the queue: a bad tag is an expected outcome
    OPENSSL_cleanse(out.data(), out.size());
    return Fail(ErrorCode::kVerificationFailed,
                "aead: sealed value does not authenticate (modified, or another key)");
  }
  return out;
}

}  // namespace moat::crypto
