// TPM 2.0 structures in TPM wire format, and the verifier's half of TPM attestation, with no TPM
// and no tpm2-tss: the service (which must not link tpm2-tss) and the device's key store both
// use this. Everything here is pure: parsing, marshalling, and crypto:: primitives.
//
//  * TPM2B_PUBLIC parsing (ECC and RSA keys), object names, and the TCG default EKs (RSA 2048,
//    template L-1; ECC P-256, template L-2) rebuilt from an EK certificate's key, so the service
//    computes the same EK-derived device ID as the device (EndorsementKey::DeviceId()).
//  * TPMS_ATTEST (quote) parsing and VerifyTpm2Quote: AK signature, qualifying data, PCR
//    selection and digest.
//  * TPMS_ATTEST (certify) parsing and VerifyTpm2Certify: the AK's statement that a key with
//    this public area is loaded in its TPM, checked against the key a CSR names.
//  * MakeCredential (TPM 2.0 Part 1 §24; Part 3 TPM2_MakeCredential) for an RSA EK (a seed
//    wrapped with RSA-OAEP-SHA256 under the label "IDENTITY\0") or an ECC P-256 EK (a seed
//    from ephemeral ECDH with the EK through KDFe); KDFa(seed, "STORAGE", AK name)
//    keys AES-128-CFB over the secret; KDFa(seed, "INTEGRITY") keys the HMAC over the
//    encrypted secret and the AK name. Only the TPM holding the EK's private key, with an
//    object of that exact name loaded, recovers the secret (TPM2_ActivateCredential).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "crypto/digest.h"
#include "crypto/key.h"

namespace moat::formats {

inline constexpr uint16_t kTpmAlgRsa = 0x0001;
inline constexpr uint16_t kTpmAlgSha256 = 0x000b;
inline constexpr uint16_t kTpmAlgEcc = 0x0023;
inline constexpr uint32_t kTpmaFixedTpm = 0x00000002;
inline constexpr uint32_t kTpmaFixedParent = 0x00000010;
inline constexpr uint32_t kTpmaSensitiveDataOrigin = 0x00000020;
inline constexpr uint32_t kTpmaRestricted = 0x00010000;
inline constexpr uint32_t kTpmaDecrypt = 0x00020000;
inline constexpr uint32_t kTpmaSign = 0x00040000;

// The parts of a TPMT_PUBLIC a verifier needs.
struct TpmPublic {
  uint16_t type = 0;      // kTpmAlgRsa or kTpmAlgEcc
  uint16_t name_alg = 0;  // kTpmAlgSha256 (others are refused)
  uint32_t attributes = 0;
  uint16_t symmetric = 0;       // a restricted decryption key's symmetric algorithm (0x0010: none)
  uint16_t symmetric_bits = 0;  // and its key size
  std::vector<uint8_t> rsa_modulus;   // RSA
  uint32_t rsa_exponent = 65537;      // RSA (0 on the wire means 65537)
  std::vector<uint8_t> ecc_x, ecc_y;  // ECC, each left-padded to 32 bytes (P-256 only)
  std::vector<uint8_t> marshalled;    // the TPMT_PUBLIC bytes as given (the name hashes these)
};

// Parses a TPM2B_PUBLIC (2-byte size, then TPMT_PUBLIC); the whole input must be consumed.
Result<TpmPublic> ParseTpm2bPublic(std::span<const uint8_t> tpm2b_public);
// TPM name: nameAlg (0x000b) || SHA-256(TPMT_PUBLIC).
std::vector<uint8_t> TpmName(const TpmPublic& key);
// The EK-derived device ID: lowercase hex SHA-256 of the EK's TPMT_PUBLIC.
std::string EkDeviceId(const TpmPublic& ek);
// The TPM2B_PUBLIC of the TCG default RSA 2048 EK (EK Credential Profile, template L-1:
// AES-128-CFB storage parent, policy PolicySecret(TPM_RH_ENDORSEMENT)) with this modulus: what
// a TPM's EK certificate certifies, rebuilt exactly.
std::vector<uint8_t> DefaultRsaEkTpm2bPublic(std::span<const uint8_t> modulus);
// The TPM2B_PUBLIC of the TCG default ECC P-256 EK (template L-2: the same attributes, policy
// and AES-128-CFB as L-1, curve NIST P-256, no scheme, no KDF) with this point (x and y of 32
// bytes each).
std::vector<uint8_t> DefaultEccEkTpm2bPublic(std::span<const uint8_t> x,
                                             std::span<const uint8_t> y);
// The AK as an uncompressed P-256 point (0x04 || x || y); kInvalidArgument unless ECC P-256.
Result<std::vector<uint8_t>> EccPoint(const TpmPublic& key);

// A TPM2_Certify as a device presents it (docs/rot.md, "Evidence"): the AK certifies that the
// key with public area `key_tpm_public` is loaded in the same TPM. A TPM device sends one for
// its TLS client key, so that the service issues certificates only for a key that lives in the
// TPM.
struct Tpm2Certify {
  std::vector<uint8_t> key_tpm_public;  // the certified key's TPM2B_PUBLIC (TPM wire format)
  std::vector<uint8_t> attest;          // TPMS_ATTEST bytes, type TPM_ST_ATTEST_CERTIFY
  std::vector<uint8_t> signature;       // AK's DER ECDSA signature over SHA-256(attest)
  bool operator==(const Tpm2Certify&) const = default;
};

// A TPM2_Quote as a device presents it (docs/rot.md, "Evidence").
struct Tpm2Quote {
  std::vector<uint8_t> attest;     // TPMS_ATTEST bytes (the TPM2B_ATTEST's buffer)
  std::vector<uint8_t> signature;  // AK's DER ECDSA signature over SHA-256(attest)
  std::vector<uint32_t> pcrs;      // quoted TPM PCRs, SHA-256 bank, ascending
  std::map<uint32_t, crypto::Sha256Digest> pcr_values;  // TPM PCR -> value when quoted
  std::vector<uint8_t> ak_public;                       // AK SubjectPublicKeyInfo DER
  std::vector<uint8_t> ak_tpm_public;                   // AK TPM2B_PUBLIC (TPM wire format)
  // The answer to the challenge's credential (TPM2_ActivateCredential's output); empty when
  // the service sent none.
  std::vector<uint8_t> activated_secret;
  // TPM2_Certify of the TLS client key by the same AK (JSON member "certify"); the service
  // requires it from TPM devices. Its qualifying data is CertifyQualifyingData(nonce).
  std::optional<Tpm2Certify> certify;
  bool operator==(const Tpm2Quote&) const = default;
};

Json ToJson(const Tpm2Quote& quote);
Result<Tpm2Quote> Tpm2QuoteFromJson(const Json& json, std::string_view path);

// The quote's TPMS_ATTEST, parsed.
struct TpmQuoteInfo {
  std::vector<uint8_t> qualified_signer;  // TPM2B_NAME buffer
  std::vector<uint8_t> extra_data;        // the qualifying data
  uint64_t clock = 0;
  uint32_t reset_count = 0, restart_count = 0;
  std::vector<uint32_t> pcrs;  // SHA-256 bank selection, ascending
  std::vector<uint8_t> pcr_digest;
};
// kInvalidArgument if malformed; kVerificationFailed if not a TPM-generated quote or if it
// selects another bank than SHA-256 alone.
Result<TpmQuoteInfo> ParseQuoteAttest(std::span<const uint8_t> attest);

// Checks that the AK signed `quote.attest`; that `ak_public` and `ak_tpm_public` are the same
// key and the latter is a restricted, fixedTPM, TPM-generated signing key; that the attest
// structure is a TPM-generated quote whose qualifying data is SHA-256(signing_input), whose PCR
// selection is exactly `quote.pcrs` (SHA-256 bank) and whose PCR digest matches
// `quote.pcr_values`. kVerificationFailed naming the first check that fails; kInvalidArgument
// for malformed input. Not checked here: credential activation (the AK's TPM holds the EK) and
// whether the PCR values are the expected ones (the log, the policy).
Result<void> VerifyTpm2Quote(const Tpm2Quote& quote, std::span<const uint8_t> signing_input);

// The certify's TPMS_ATTEST, parsed.
struct TpmCertifyInfo {
  std::vector<uint8_t> qualified_signer;  // TPM2B_NAME buffer
  std::vector<uint8_t> extra_data;        // the qualifying data
  std::vector<uint8_t> name;              // the certified object's name
  std::vector<uint8_t> qualified_name;    // its qualified name (hashes in its parents)
};
// kInvalidArgument if malformed; kVerificationFailed if not a TPM-generated certify structure.
Result<TpmCertifyInfo> ParseCertifyAttest(std::span<const uint8_t> attest);

// The qualifying data of the TLS key's certify: SHA-256(nonce || "moat-certify"), so that a
// certify answers one challenge only and cannot be mistaken for a quote's (whose qualifying
// data hashes a signing input that starts with another domain label).
std::vector<uint8_t> CertifyQualifyingData(std::span<const uint8_t> nonce);

// Checks that `ak` signed `certify.attest`; that it is a TPM-generated certify structure whose
// qualifying data is CertifyQualifyingData(nonce) and whose certified name is the name of
// `certify.key_tpm_public`; that this public area is an ECC P-256 key the TPM generated and
// cannot let go of (fixedTPM, fixedParent, sensitiveDataOrigin) and an unrestricted signing key
// (sign, neither decrypt nor restricted: what a TLS key is); and that its point is
// `expected_key`. The caller has established that `ak` is an AK of the right TPM (credential
// activation). kVerificationFailed naming the first check that fails; kInvalidArgument for
// malformed input.
Result<void> VerifyTpm2Certify(const Tpm2Certify& certify, const crypto::PublicKey& ak,
                               std::span<const uint8_t> nonce,
                               const crypto::PublicKey& expected_key);

// KDFa with SHA-256 (TPM 2.0 Part 1 §11.4.10.2): counter mode over HMAC(key, i || label || 0 ||
// context_u || context_v || bits).
Result<std::vector<uint8_t>> KdfaSha256(std::span<const uint8_t> key, std::string_view label,
                                        std::span<const uint8_t> context_u,
                                        std::span<const uint8_t> context_v, uint32_t bits);

// KDFe with SHA-256 (TPM 2.0 Part 1 §11.4.10.3): counter mode over SHA-256(i || z || label ||
// 0 || party_u || party_v).
std::vector<uint8_t> KdfeSha256(std::span<const uint8_t> z, std::string_view label,
                                std::span<const uint8_t> party_u, std::span<const uint8_t> party_v,
                                uint32_t bits);

struct MadeCredential {
  std::vector<uint8_t> credential_blob;   // TPM2B_ID_OBJECT, wire format
  std::vector<uint8_t> encrypted_secret;  // TPM2B_ENCRYPTED_SECRET, wire format
};
// MakeCredential for an RSA 2048 or ECC P-256 EK (restricted decryption, AES-128-CFB, SHA-256
// name algorithm). `secret` at most 32 bytes; `seed` is 32 random bytes: for an RSA EK the seed
// itself, wrapped with RSA-OAEP; for an ECC EK the ephemeral ECDH private key (Part 1 §C.6.4:
// seed = KDFe(Z, "IDENTITY", ephemeral x, EK x), the ephemeral point is the encrypted secret).
// kInvalidArgument for another kind of EK (or, negligibly rarely, an ECC scalar out of range).
Result<MadeCredential> MakeCredential(const TpmPublic& ek, std::span<const uint8_t> ak_name,
                                      std::span<const uint8_t> secret,
                                      std::span<const uint8_t> seed);

}  // namespace moat::formats
