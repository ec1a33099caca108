// Asymmetric keys: ECDSA P-256 and Ed25519.
//
// Signatures: ECDSA P-256 signs SHA-256(message) and emits a DER ECDSA-Sig-Value; Ed25519 is
// pure Ed25519 (RFC 8032) over the message. A key's identifier throughout Moat is the SHA-256
// of its DER SubjectPublicKeyInfo (device IDs, image-signing key IDs).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "crypto/digest.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace moat::crypto {

enum class KeyType { kEcdsaP256, kEd25519 };

// "ecdsa-p256" or "ed25519".
std::string_view KeyTypeName(KeyType type);
Result<KeyType> ParseKeyType(std::string_view name);

// A byte string holding a secret; wiped when destroyed. Move-only.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  ~SecretString();
  SecretString(SecretString&& other) noexcept : value_(std::move(other.value_)) {
    other.value_.clear();
  }
  SecretString& operator=(SecretString&& other) noexcept;
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;

  std::string_view view() const { return value_; }

 private:
  std::string value_;
};

// ECDSA signatures as TPMs and PKCS#11 tokens give them (r and s as big-endian integers,
// PKCS#11 CKM_ECDSA output is r || s) to the DER ECDSA-Sig-Value OpenSSL and Moat use.
// kInvalidArgument for empty or over-long (> 66 bytes) integers.
Result<std::vector<uint8_t>> EcdsaSignatureFromRS(std::span<const uint8_t> r,
                                                  std::span<const uint8_t> s);
// DER ECDSA-Sig-Value -> r || s, each padded to `half` bytes (32 for P-256).
Result<std::vector<uint8_t>> EcdsaSignatureToRS(std::span<const uint8_t> der, size_t half = 32);

// A public key. Cheap to copy (shares the underlying OpenSSL object, which is immutable).
class PublicKey {
 public:
  static Result<PublicKey> FromDer(std::span<const uint8_t> spki_der);
  static Result<PublicKey> FromPem(std::string_view pem);
  // Raw encodings as used by TUF "keyval.public": Ed25519 32 bytes; P-256 uncompressed point
  // (65 bytes, 0x04 || X || Y).
  static Result<PublicKey> FromRaw(KeyType type, std::span<const uint8_t> raw);

  KeyType type() const { return type_; }
  std::vector<uint8_t> ToDer() const;  // SubjectPublicKeyInfo
  std::string ToPem() const;
  std::vector<uint8_t> ToRaw() const;

  // SHA-256 of ToDer(): the key's identity in Moat.
  Sha256Digest Fingerprint() const;
  std::string FingerprintHex() const;

  // kVerificationFailed if the signature does not match; kInvalidArgument if malformed.
  Result<void> Verify(std::span<const uint8_t> message, std::span<const uint8_t> signature) const;
  Result<void> Verify(std::string_view message, std::span<const uint8_t> signature) const;
  // ECDSA P-256 only: verifies a signature over a precomputed SHA-256 digest.
  Result<void> VerifyDigest(const Sha256Digest& digest, std::span<const uint8_t> signature) const;

  bool operator==(const PublicKey& other) const;

  // For use inside the crypto component only.
  EVP_PKEY* native() const { return key_.get(); }
  static Result<PublicKey> FromNative(EVP_PKEY* key);  // takes a new reference

 private:
  PublicKey(std::shared_ptr<EVP_PKEY> key, KeyType type) : key_(std::move(key)), type_(type) {}
  std::shared_ptr<EVP_PKEY> key_;
  KeyType type_;
};

// Signs a SHA-256 digest with a P-256 key held elsewhere (a TPM, a PKCS#11 token) and returns
// the DER ECDSA-Sig-Value. Called from inside OpenSSL (TLS handshakes): it must not throw.
using DigestSigner = std::function<Result<std::vector<uint8_t>>(const Sha256Digest& digest)>;

// Where OpenSSL finds a provider-held key (PrivateKey::FromProvider).
struct ProviderKeySpec {
  std::string provider;  // e.g. "tpm2" (Debian tpm2-openssl)
  // Environment set before the provider is first loaded, e.g. {"TPM2OPENSSL_TCTI", "swtpm:..."}.
  // A provider is loaded once per process: a later call asking for a different value fails.
  std::vector<std::pair<std::string, std::string>> environment;
  std::string uri;  // an OSSL_STORE URI or file path: "handle:0x81000002", "/x/key.pem"
};

// A private key held in process memory. Devices keep their identity keys in a KeyStore
// (src/rot) instead; PrivateKey is for service CAs, signing tools and the development store.
// A key whose secret lives elsewhere (FromSigner, FromProvider) is a PrivateKey too, so the TLS
// contexts take it unchanged; its ToPem() fails because there are no private bytes to export.
class PrivateKey {
 public:
  static Result<PrivateKey> Generate(KeyType type);
  // Unencrypted PKCS#8 ("BEGIN PRIVATE KEY") or SEC1 ("BEGIN EC PRIVATE KEY") PEM.
  static Result<PrivateKey> FromPem(std::string_view pem);

  // A P-256 key whose every signature (Sign, SignDigest, TLS CertificateVerify) is made by
  // `signer`; `public_key` must be the signer's public key (P-256). The process never holds the
  // private scalar. `signer` must stay usable for as long as any copy of the key lives.
  static Result<PrivateKey> FromSigner(const PublicKey& public_key, DigestSigner signer);

  // Loads a key through an OpenSSL 3 provider (OSSL_PROVIDER_load + OSSL_STORE): the provider
  // keeps the secret (for tpm2-openssl, inside the TPM). kNotFound if the URI holds no private
  // key; kUnavailable if the provider cannot be loaded.
  static Result<PrivateKey> FromProvider(const ProviderKeySpec& spec);

  KeyType type() const { return type_; }
  PublicKey public_key() const;

  // SECURITY: the PEM holds the secret key. Write it with mode 0600; never log it.
  Result<SecretString> ToPem() const;

  Result<std::vector<uint8_t>> Sign(std::span<const uint8_t> message) const;
  Result<std::vector<uint8_t>> Sign(std::string_view message) const;

  // ECDSA P-256 only: signs a precomputed SHA-256 digest (what a TPM or HSM signs), giving the
  // same DER signature Sign() gives for the message. kInvalidArgument for Ed25519 keys, which
  // sign messages, not digests.
  Result<std::vector<uint8_t>> SignDigest(const Sha256Digest& digest) const;

  // For use inside the crypto component only.
  EVP_PKEY* native() const { return key_.get(); }

 private:
  PrivateKey(std::shared_ptr<EVP_PKEY> key, KeyType type, PublicKey public_key)
      : key_(std::move(key)), type_(type), public_key_(std::move(public_key)) {}
  // OpenSSL 3.0 picks a signature implementation from any provider and hands it an export of
  // the key; a provider key exports only its public half. Signing with such a key must ask
  // for its own provider's implementation ("?provider=tpm2"). Empty for ordinary keys.
  std::string property_query_;
  // Completes a private key with a public-only copy of its public half.
  static Result<PrivateKey> FromNativeOwned(std::shared_ptr<EVP_PKEY> key, KeyType type);
  std::shared_ptr<EVP_PKEY> key_;
  KeyType type_;
  PublicKey public_key_;
};

}  // namespace moat::crypto
