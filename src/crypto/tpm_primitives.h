// The OpenSSL primitives TPM 2.0 credential protection needs (TPM 2.0 Part 1 §24, MakeCredential):
// HMAC-SHA256 (KDFa and the integrity HMAC), AES-128-CFB (the credential's symmetric
// encryption), RSA-OAEP-SHA256 with a label (the seed, wrapped with an RSA EK), and ECDH on
// P-256 (the seed, shared with an ECC EK). formats/tpm2.h builds MakeCredential from these;
// nothing here knows TPM structures.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "crypto/digest.h"
#include "crypto/x509.h"

namespace moat::crypto {

Result<Sha256Digest> HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data);

// AES-128 in CFB mode (full-block feedback, no padding); `key` 16 bytes, `iv` 16 bytes.
Result<std::vector<uint8_t>> Aes128CfbEncrypt(std::span<const uint8_t> key,
                                              std::span<const uint8_t> iv,
                                              std::span<const uint8_t> plaintext);
Result<std::vector<uint8_t>> Aes128CfbDecrypt(std::span<const uint8_t> key,
                                              std::span<const uint8_t> iv,
                                              std::span<const uint8_t> ciphertext);

// An RSA public key as its numbers (big-endian, no leading zeros needed).
struct RsaPublicNumbers {
  std::vector<uint8_t> modulus;
  std::vector<uint8_t> exponent;
  bool operator==(const RsaPublicNumbers&) const = default;
};

// The RSA key of a certificate (an EK certificate); kInvalidArgument if it is not RSA.
Result<RsaPublicNumbers> RsaPublicKeyOf(const Certificate& certificate);

// Endorsement key certificates and their manufacturers' CAs are RSA (or ECC P-384) X.509, which
// crypto::Certificate (Moat's own P-256/Ed25519 PKI) refuses to load; these work on DER.
// The RSA key of a DER certificate; kInvalidArgument if it is not RSA.
Result<RsaPublicNumbers> RsaPublicKeyOfCertificateDer(std::span<const uint8_t> der);

// Every certificate of a PEM text as DER (kInvalidArgument if there is none or one is bad).
Result<std::vector<std::vector<uint8_t>>> CertificatesDerFromPem(std::string_view pem);
std::string CertificateDerToPem(std::span<const uint8_t> der);

struct CaCertificateInfo {
  std::string subject;     // RFC 2253
  std::string sha256_hex;  // of the DER
  // Unix seconds, not SystemTime: EK CAs often say 9999-12-31, beyond what SystemTime's
  // nanoseconds reach (2262).
  int64_t not_after_unix = 0;
};
// A manufacturer CA certificate: kInvalidArgument unless it parses and is a CA
// (basicConstraints CA:TRUE).
Result<CaCertificateInfo> InspectCaCertificateDer(std::span<const uint8_t> der);

// Verifies an EK certificate (DER) against manufacturer CAs (DER) as of `at`. Any registered CA
// is a trust anchor (X509_V_FLAG_PARTIAL_CHAIN: registering a vendor's issuing CA is enough);
// the others may serve as intermediates. kVerificationFailed naming OpenSSL's reason.
Result<void> VerifyEkCertificateDer(std::span<const uint8_t> ek_certificate,
                                    std::span<const std::vector<uint8_t>> manufacturer_cas,
                                    SystemTime at);

// RSA-OAEP with SHA-256 (hash and MGF1) and `label`, which is used byte for byte (a TPM label
// includes its terminating NUL: "IDENTITY\0").
Result<std::vector<uint8_t>> RsaOaepSha256Encrypt(const RsaPublicNumbers& key,
                                                  std::span<const uint8_t> label,
                                                  std::span<const uint8_t> plaintext);

// The EC P-256 key of a DER certificate (an ECC EK certificate) as an uncompressed point
// (0x04 || x || y); kInvalidArgument if the key is not EC P-256.
Result<std::vector<uint8_t>> EcP256PointOfCertificateDer(std::span<const uint8_t> der);

// One side of ECDH on NIST P-256 with `private_scalar` (32 bytes big-endian, 1..n-1) as the
// ephemeral private key and (`peer_x`, `peer_y`) as the other side's public point.
struct EcdhP256Shared {
  std::vector<uint8_t> ephemeral_x, ephemeral_y;  // private_scalar * G, 32 bytes each
  std::vector<uint8_t> z;                         // x of private_scalar * peer, 32 bytes
};
// kInvalidArgument if the peer point is not on the curve or the scalar is out of range.
Result<EcdhP256Shared> EcdhP256(std::span<const uint8_t> private_scalar,
                                std::span<const uint8_t> peer_x, std::span<const uint8_t> peer_y);

}  // namespace moat::crypto
