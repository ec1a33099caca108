// KeyStore: the device's root of trust, behind one narrow interface.
//
// Keys are created inside the store, named by a label, and never leave it: callers get the
// public key, signatures, and (for TLS) an OpenSSL handle through which the store signs. A
// TPM 2.0 store keeps keys in the TPM, a PKCS#11 store on the token; the software store keeps
// them in files and exists for development only.
//
// The store also holds the measurement registers (PCR semantics: extend-only, reset only at
// boot) and produces attestation proofs over them, bound to a server nonce.
//
// Thread-safety: implementations are thread-compatible; moatd serialises access.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "formats/tpm2.h"

namespace moat::rot {

// Labels the runtime uses. A label is 1..64 of [a-z0-9._-].
inline constexpr std::string_view kIdentityKeyLabel = "identity";
inline constexpr std::string_view kTlsClientKeyLabel = "tls-client";

Result<void> ValidateKeyLabel(std::string_view label);

// Registers are numbered 0..kMaxRegister, as a TPM's PCRs.
inline constexpr uint32_t kMaxRegister = 23;

// Registers held in memory, for stores without PCRs (software, PKCS#11): extend-only, and reset
// when the process starts, as PCRs are at boot.
class MemoryRegisters {
 public:
  // value = SHA-256(value || digest); kInvalidArgument for a register above kMaxRegister.
  Result<void> Extend(uint32_t pcr, const crypto::Sha256Digest& digest);
  const std::map<uint32_t, crypto::Sha256Digest>& values() const { return values_; }

 private:
  std::map<uint32_t, crypto::Sha256Digest> values_;
};

// A TPM2_Quote, as Tpm2KeyStore::Attest produces it (docs/rot.md, "Evidence"): the wire
// structure lives in formats (formats/tpm2.h) so that the service verifies it without tpm2-tss;
// formats::VerifyTpm2Quote checks it.
using Tpm2Quote = formats::Tpm2Quote;

// What an attestation proof is made of. Every store fills `signature` (the identity key over
// the signing input, which the service verifies today); a TPM store also fills `tpm2_quote`,
// whose qualifying data is SHA-256 of the same signing input.
struct AttestationProof {
  std::vector<uint8_t> signature;  // identity key over the caller's signing input
  std::optional<Tpm2Quote> tpm2_quote;
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;

  // "software", "tpm2" or "pkcs11".
  virtual std::string_view backend() const = 0;

  // Creates a P-256 key named `label` inside the store and returns its public key.
  // kAlreadyExists if the label is taken: keys are never silently replaced.
  virtual Result<crypto::PublicKey> CreateKey(std::string_view label) = 0;

  // The public key of `label`; kNotFound if there is none.
  virtual Result<crypto::PublicKey> GetPublicKey(std::string_view label) const = 0;

  // ECDSA P-256 over a SHA-256 digest, DER-encoded signature.
  virtual Result<std::vector<uint8_t>> SignDigest(std::string_view label,
                                                  const crypto::Sha256Digest& digest) = 0;

  // An OpenSSL handle through which the store signs for TLS, so the TLS stack never holds
  // the key's bytes (for the software store it is the key itself: it is a development store).
  virtual Result<crypto::PrivateKey> TlsKey(std::string_view label) = 0;

  // Extends register `pcr` with `digest`: value = SHA-256(value || digest).
  virtual Result<void> Extend(uint32_t pcr, const crypto::Sha256Digest& digest) = 0;

  // Current register values (registers never extended are absent).
  virtual Result<std::map<uint32_t, crypto::Sha256Digest>> ReadRegisters() const = 0;

  // Proves the registers and `signing_input` (which the caller builds to include the server's
  // nonce and the measurement log) with the identity key.
  virtual Result<AttestationProof> Attest(std::span<const uint8_t> signing_input) = 0;

  // Convenience: CreateKey if missing, else GetPublicKey.
  Result<crypto::PublicKey> EnsureKey(std::string_view label);
  // Convenience: SignDigest(label, SHA-256(message)).
  Result<std::vector<uint8_t>> Sign(std::string_view label, std::span<const uint8_t> message);
};

// The device ID: lowercase hex SHA-256 of the identity public key's DER SubjectPublicKeyInfo.
std::string DeviceIdOf(const crypto::PublicKey& identity_key);

}  // namespace moat::rot
