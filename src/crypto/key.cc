#include "crypto/key.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/encoding.h"
#include "crypto/openssl_util.h"

namespace moat::crypto {

using internal::BioPtr;
using internal::EvpMdCtxPtr;
using internal::EvpPkeyCtxPtr;
using internal::EvpPkeyPtr;
using internal::OpenSslError;

namespace {

// PEM inputs larger than this are not keys; refuse before handing them to OpenSSL.
constexpr size_t kMaxPemBytes = 16 * 1024;
constexpr size_t kMaxDerBytes = 8 * 1024;

std::shared_ptr<EVP_PKEY> Share(EVP_PKEY* key) {
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

// Identifies the key type; anything but P-256 and Ed25519 is refused.
Result<KeyType> TypeOf(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519")) return KeyType::kEd25519;
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &len) != 1) {
      return Fail(OpenSslError(ErrorCode::kInvalidArgument, "EC key without a named curve"));
    }
    if (std::string_view(group) == "prime256v1" || std::string_view(group) == "P-256") {
      return KeyType::kEcdsaP256;
    }
    return Fail(ErrorCode::kInvalidArgument,
                "unsupported EC curve '{}' (Moat uses P-256 or Ed25519)", group);
  }
  return Fail(ErrorCode::kInvalidArgument,
              "unsupported key algorithm '{}' (Moat uses ECDSA P-256 or Ed25519)",
              EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "unknown");
}

}  // namespace

std::string_view KeyTypeName(KeyType type) {
  return type == KeyType::kEcdsaP256 ? "ecdsa-p256" : "ed25519";
}

Result<KeyType> ParseKeyType(std::string_view name) {
  if (name == "ecdsa-p256" || name == "p256") return KeyType::kEcdsaP256;
  if (name == "ed25519") return KeyType::kEd25519;
  return Fail(ErrorCode::kInvalidArgument, "unknown key type '{}' (expected ecdsa-p256 or ed25519)",
              name.substr(0, 32));
}

SecretString::~SecretString() {
  if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size());
}

SecretString& SecretString::operator=(SecretString&& other) noexcept {
  if (this != &other) {
    if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size());
    value_ = std::move(other.value_);
    other.value_.clear();
  }
  return *this;
}

// ---- PublicKey ----

Result<PublicKey> PublicKey::FromNative(EVP_PKEY* key) {
  if (key == nullptr) return Fail(ErrorCode::kInvalidArgument, "no public key");
  MOAT_ASSIGN_OR_RETURN(KeyType type, TypeOf(key));
  if (EVP_PKEY_up_ref(key) != 1) return Fail(OpenSslError(ErrorCode::kInternal, "EVP_PKEY_up_ref"));
  return PublicKey(Share(key), type);
}

Result<PublicKey> PublicKey::FromDer(std::span<const uint8_t> der) {
  if (der.empty() || der.size() > kMaxDerBytes) {
    return Fail(ErrorCode::kInvalidArgument, "public key: DER of {} bytes is not a key",
                der.size());
  }
  const unsigned char* p = der.data();
  EvpPkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!key) return Fail(OpenSslError(ErrorCode::kInvalidArgument, "public key: invalid DER"));
  if (p != der.data() + der.size()) {
    return Fail(ErrorCode::kInvalidArgument, "public key: trailing bytes after DER");
  }
  MOAT_ASSIGN_OR_RETURN(KeyType type, TypeOf(key.get()));
  return PublicKey(Share(key.release()), type);
}

Result<PublicKey> PublicKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxPemBytes) {
    return Fail(ErrorCode::kLimitExceeded, "public key: PEM larger than {} bytes", kMaxPemBytes);
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Fail(OpenSslError(ErrorCode::kInternal, "BIO_new_mem_buf"));
  EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return Fail(
        OpenSslError(ErrorCode::kInvalidArgument, "public key: not a PEM 'PUBLIC KEY' block"));
  }
  MOAT_ASSIGN_OR_RETURN(KeyType type, TypeOf(key.get()));
  return PublicKey(Share(key.release()), type);
}

Result<PublicKey> PublicKey::FromRaw(KeyType type, std::span<const uint8_t> raw) {
  if (type == KeyType::kEd25519) {
    if (raw.size() != 32) {
      return Fail(ErrorCode::kInvalidArgument, "ed25519 public key must be 32 bytes, not {}",
                  raw.size());
    }
    EvpPkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size()));
    if (!key) return Fail(OpenSslError(ErrorCode::kInvalidArgument, "ed25519 public key"));
    return PublicKey(Share(key.release()), type);
  }
  if (raw.size() != 65 || raw[0] != 0x04) {
    return Fail(ErrorCode::kInvalidArgument,
                "P-256 public key must be a 65-byte uncompressed point");
  }
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                          const_cast<char*>("prime256v1"), 0),
                         OSSL_PARAM_construct_octet_string(
                             OSSL_PKEY_PARAM_PUB_KEY, const_cast<uint8_t*>(raw.data()), raw.size()),
                         OSSL_PARAM_construct_end()};
  EVP_PKEY* out = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &out, EVP_PKEY_PUBLIC_KEY, params) != 1 || out == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "P-256 public key: invalid point"));
  }
  EvpPkeyPtr key(out);
  // EVP_PKEY_fromdata does not check that the point is on the curve; do it explicitly.
  EvpPkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "P-256 public key: point not on curve"));
  }
  return PublicKey(Share(key.release()), type);
}

std::vector<uint8_t> PublicKey::ToDer() const {
  int len = i2d_PUBKEY(key_.get(), nullptr);
  if (len <= 0) return {};
  std::vector<uint8_t> out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  if (i2d_PUBKEY(key_.get(), &p) != len) return {};
  return out;
}

std::string PublicKey::ToPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1) return {};
  return internal::BioToString(bio.get());
}

std::vector<uint8_t> PublicKey::ToRaw() const {
  if (type_ == KeyType::kEd25519) {
    std::vector<uint8_t> out(32);
    size_t len = out.size();
    if (EVP_PKEY_get_raw_public_key(key_.get(), out.data(), &len) != 1 || len != 32) return {};
    return out;
  }
  std::vector<uint8_t> out(65);
  size_t len = 0;
  if (EVP_PKEY_get_octet_string_param(key_.get(), OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out.data(),
                                      out.size(), &len) != 1 ||
      len != 65) {
    return {};
  }
  return out;
}

Sha256Digest PublicKey::Fingerprint() const { return Sha256(ToDer()); }

std::string PublicKey::FingerprintHex() const { return HexEncode(Fingerprint()); }

Result<void> PublicKey::Verify(std::span<const uint8_t> message,
                               std::span<const uint8_t> signature) const {
  if (signature.empty() || signature.size() > 512) {
    return Fail(ErrorCode::kInvalidArgument, "signature of {} bytes is malformed",
                signature.size());
  }
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx ||
      EVP_DigestVerifyInit_ex(ctx.get(), nullptr, type_ == KeyType::kEcdsaP256 ? "SHA256" : nullptr,
                              nullptr, nullptr, key_.get(), nullptr) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_DigestVerifyInit"));
  }
  int rc = EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                            message.size());
  if (rc != 1) {
    ERR_clear_error();  // a mismatch is an expected outcome, not a library failure
    return Fail(ErrorCode::kVerificationFailed, "{} signature does not match", KeyTypeName(type_));
  }
  return Ok();
}

Result<void> PublicKey::Verify(std::string_view message, std::span<const uint8_t> signature) const {
  return Verify(AsBytes(message), signature);
}

bool PublicKey::operator==(const PublicKey& other) const {
  return EVP_PKEY_eq(key_.get(), other.key_.get()) == 1;
}

// ---- PrivateKey ----

Result<PrivateKey> PrivateKey::Generate(KeyType type) {
  EVP_PKEY* out = nullptr;
  if (type == KeyType::kEd25519) {
    out = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  } else {
    out = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  }
  if (out == nullptr) return Fail(OpenSslError(ErrorCode::kInternal, "key generation"));
  return FromNativeOwned(Share(out), type);
}

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxPemBytes) {
    return Fail(ErrorCode::kLimitExceeded, "private key: PEM larger than {} bytes", kMaxPemBytes);
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Fail(OpenSslError(ErrorCode::kInternal, "BIO_new_mem_buf"));
  // A null password callback with an empty password makes encrypted keys fail instead of
  // prompting on the terminal.
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>("")));
  if (!key) {
    ERR_clear_error();  // SECURITY: do not echo parser details about secret input
    return Fail(ErrorCode::kInvalidArgument,
                "private key: not an unencrypted PEM private key (PKCS#8 or SEC1)");
  }
  MOAT_ASSIGN_OR_RETURN(KeyType type, TypeOf(key.get()));
  return FromNativeOwned(Share(key.release()), type);
}

Result<PrivateKey> PrivateKey::FromNativeOwned(std::shared_ptr<EVP_PKEY> key, KeyType type) {
  // SECURITY: the public half gets an object of its own. Sharing the private EVP_PKEY would
  // keep the secret in memory for as long as any copy of the PublicKey lives (caches,
  // certificates, requests), long after the PrivateKey is gone.
  int len = i2d_PUBKEY(key.get(), nullptr);
  if (len <= 0) return Fail(OpenSslError(ErrorCode::kInternal, "i2d_PUBKEY"));
  std::vector<uint8_t> spki(static_cast<size_t>(len));
  unsigned char* p = spki.data();
  if (i2d_PUBKEY(key.get(), &p) != len) {
    return Fail(OpenSslError(ErrorCode::kInternal, "i2d_PUBKEY"));
  }
  MOAT_ASSIGN_OR_RETURN(PublicKey public_key, PublicKey::FromDer(spki));
  return PrivateKey(std::move(key), type, std::move(public_key));
}

PublicKey PrivateKey::public_key() const { return public_key_; }

Result<SecretString> PrivateKey::ToPem() const {
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) bio.reset(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "PEM_write_bio_PrivateKey"));
  }
  return SecretString(internal::BioToString(bio.get()));
}

Result<std::vector<uint8_t>> PrivateKey::Sign(std::span<const uint8_t> message) const {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx ||
      EVP_DigestSignInit_ex(ctx.get(), nullptr, type_ == KeyType::kEcdsaP256 ? "SHA256" : nullptr,
                            nullptr, property_query_.empty() ? nullptr : property_query_.c_str(),
                            key_.get(), nullptr) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_DigestSignInit"));
  }
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_DigestSign (size)"));
  }
  std::vector<uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_DigestSign"));
  }
  sig.resize(len);
  return sig;
}

Result<std::vector<uint8_t>> PrivateKey::Sign(std::string_view message) const {
  return Sign(AsBytes(message));
}

Result<std::vector<uint8_t>> PrivateKey::SignDigest(const Sha256Digest& digest) const {
  if (type_ != KeyType::kEcdsaP256) {
    return Fail(ErrorCode::kInvalidArgument, "{} keys sign messages, not digests",
                KeyTypeName(type_));
  }
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(
      nullptr, key_.get(), property_query_.empty() ? nullptr : property_query_.c_str()));
  size_t len = 0;
  if (!ctx || EVP_PKEY_sign_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_sign(ctx.get(), nullptr, &len, digest.data(), digest.size()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_PKEY_sign (size)"));
  }
  std::vector<uint8_t> sig(len);
  if (EVP_PKEY_sign(ctx.get(), sig.data(), &len, digest.data(), digest.size()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_PKEY_sign"));
  }
  sig.resize(len);
  return sig;
}

Result<void> PublicKey::VerifyDigest(const Sha256Digest& digest,
                                     std::span<const uint8_t> signature) const {
  if (type_ != KeyType::kEcdsaP256) {
    return Fail(ErrorCode::kInvalidArgument, "{} keys verify messages, not digests",
                KeyTypeName(type_));
  }
  if (signature.empty() || signature.size() > 512) {
    return Fail(ErrorCode::kInvalidArgument, "signature of {} bytes is malformed",
                signature.size());
  }
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key_.get(), nullptr));
  if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_PKEY_verify_init"));
  }
  if (EVP_PKEY_verify(ctx.get(), signature.data(), signature.size(), digest.data(),
                      digest.size()) != 1) {
    ERR_clear_error();
    return Fail(ErrorCode::kVerificationFailed, "ecdsa-p256 signature does not match");
  }
  return Ok();
}

}  // namespace moat::crypto
