// X.509 certificates and certificate requests: parsing, issuing, chain verification.
//
// Moat's PKI is ECDSA P-256 (and Ed25519 for signing tools) end to end, so a Certificate or
// CertificateRequest whose subject key is anything else is refused when parsed; that keeps
// public_key() infallible. Parsers are strict and bounded: PEM input is size-limited, DER must
// not have trailing bytes, certificates with malformed or duplicate extensions are rejected,
// and every malformed input gives kInvalidArgument (kLimitExceeded for oversized input) with a
// message naming what was being parsed.
//
// Certificate and CertificateRequest are immutable and cheap to copy (they share one OpenSSL
// object); they are safe to use from several threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "crypto/digest.h"
#include "crypto/key.h"

typedef struct x509_st X509;
typedef struct X509_req_st X509_REQ;

namespace moat::crypto {

// kMoatDeviceUpdate marks a device's update certificate: it lets a device whose attestation
// failed reach the update and report endpoints of moat-service, and nothing else. It is a
// Moat-specific OID (kMoatDeviceUpdateOid), so no other TLS server (an MQTT broker, a web
// service) accepts such a certificate as a client certificate.
enum class ExtendedKeyUsage { kClientAuth, kServerAuth, kCodeSigning, kMoatDeviceUpdate };
// A UUID-based OID (ITU-T X.667, arc 2.25) so it needs no registration and cannot collide.
inline constexpr const char* kMoatDeviceUpdateOid = "2.25.278120794584638744231336198651262494729";

// "clientAuth", "serverAuth", "codeSigning" (the RFC 5280 names) or "moatDeviceUpdate".
std::string_view ExtendedKeyUsageName(ExtendedKeyUsage usage);

class Certificate {
 public:
  // Exactly one PEM "CERTIFICATE" block (at most 64 KiB of text). Text outside the block is
  // ignored, as RFC 7468 allows; any other PEM block is an error.
  static Result<Certificate> FromPem(std::string_view pem);
  // DER; trailing bytes are rejected.
  static Result<Certificate> FromDer(std::span<const uint8_t> der);
  // One or more PEM "CERTIFICATE" blocks, in order (at most 256 KiB of text). More than
  // `max_certs` certificates is kLimitExceeded; a block of another type is kInvalidArgument.
  static Result<std::vector<Certificate>> ParsePemChain(std::string_view pem,
                                                        size_t max_certs = 16);

  std::string ToPem() const;
  // The exact DER the certificate was parsed from (or issued as).
  std::vector<uint8_t> ToDer() const;

  // The last commonName of the subject (UTF-8), or "" if there is none.
  std::string SubjectCommonName() const;
  // RFC 2253 one-line forms, most specific first, e.g. "CN=Test Root CA,O=Moat Test". Non-ASCII
  // characters appear as UTF-8.
  std::string Subject() const;
  std::string Issuer() const;
  // The serial number as lowercase hex of its big-endian magnitude, e.g. "3fa2...".
  std::string SerialHex() const;
  SystemTime NotBefore() const;
  SystemTime NotAfter() const;

  PublicKey public_key() const;

  // subjectAltName entries of each type, in certificate order (empty without the extension).
  std::vector<std::string> SanUris() const;
  std::vector<std::string> SanDnsNames() const;
  std::vector<std::string> SanIpAddresses() const;  // "192.0.2.1", "2001:db8::1"

  // basicConstraints CA:TRUE.
  bool IsCa() const;
  // True only if the certificate has an extendedKeyUsage extension that lists `usage`. A
  // certificate without the extension (which RFC 5280 reads as "any use") answers false:
  // Moat always states the usage of what it issues.
  bool HasExtendedKeyUsage(ExtendedKeyUsage usage) const;

  // SHA-256 of the DER.
  Sha256Digest Fingerprint() const;

  // Same DER encoding.
  bool operator==(const Certificate& other) const;

  // For use inside the crypto component only. The object must not be modified.
  X509* native() const;
  // For use inside the crypto component only: a Certificate sharing `x` (reference-counted),
  // which OpenSSL has already decoded (a TLS peer's certificate), checked as FromDer checks it.
  // It skips the second DER decode, whose public-key decoder setup dominates in OpenSSL 3.0.
  static Result<Certificate> FromNative(X509* x);

 private:
  struct State;
  // Takes ownership of `x509` (freed on failure too).
  static Result<Certificate> FromParsed(X509* x509, std::vector<uint8_t> der);
  explicit Certificate(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

// Signs `message` exactly as PrivateKey::Sign does (P-256: DER ECDSA-Sig-Value over
// SHA-256(message); Ed25519: pure Ed25519). Lets a key held in a TPM or HSM sign a request.
using MessageSigner = std::function<Result<std::vector<uint8_t>>(std::span<const uint8_t> message)>;

// A PKCS#10 certificate signing request.
class CertificateRequest {
 public:
  // Subject "CN=<common_name>", with the URIs (if any) in a subjectAltName extension request.
  static Result<CertificateRequest> Create(const PrivateKey& key, std::string_view common_name,
                                           std::span<const std::string> san_uris = {});
  // As above, for a key that signs elsewhere: `sign` must sign with the private half of `key`
  // (checked: a request whose signature does not verify is kVerificationFailed).
  static Result<CertificateRequest> Create(const PublicKey& key, const MessageSigner& sign,
                                           std::string_view common_name,
                                           std::span<const std::string> san_uris = {});
  // One PEM "CERTIFICATE REQUEST" (or "NEW CERTIFICATE REQUEST") block, at most 64 KiB.
  static Result<CertificateRequest> FromPem(std::string_view pem);
  static Result<CertificateRequest> FromDer(std::span<const uint8_t> der);

  std::string ToPem() const;
  std::vector<uint8_t> ToDer() const;

  // Proof of possession: the request is signed by the private half of public_key().
  // kVerificationFailed if not. Parsing does not check this; call it before trusting anything
  // in the request.
  Result<void> VerifySignature() const;

  PublicKey public_key() const;
  std::string SubjectCommonName() const;  // "" if there is none
  std::vector<std::string> SanUris() const;

  // For use inside the crypto component only. The object must not be modified.
  X509_REQ* native() const;

 private:
  struct State;
  explicit CertificateRequest(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

// What a certificate to be issued says. Key usage, basicConstraints and extendedKeyUsage
// follow from `kind` alone:
//   kRootCa, kIntermediateCa  basicConstraints critical CA:TRUE (pathlen if given),
//                             keyUsage critical keyCertSign, cRLSign
//   kClient                   basicConstraints critical CA:FALSE,
//                             keyUsage critical digitalSignature, EKU clientAuth
//   kServer                   same, EKU serverAuth
//   kCodeSigning              same, EKU codeSigning
//   kDeviceUpdate             same, EKU moatDeviceUpdate (kMoatDeviceUpdateOid) only
// Every certificate gets a subjectKeyIdentifier (SHA-1 of the key, RFC 5280 method 1); one
// issued by another certificate also gets an authorityKeyIdentifier (the issuer's key ID).
struct CertificateProfile {
  enum class Kind { kRootCa, kIntermediateCa, kClient, kServer, kCodeSigning, kDeviceUpdate };
  Kind kind = Kind::kClient;
  std::string common_name;   // required, at most 64 characters
  std::string organization;  // optional ("" = omitted)
  // Written as given, to the second (sub-second parts are dropped); not_after > not_before.
  // Years from 2050 on are encoded as GeneralizedTime, as RFC 5280 requires.
  SystemTime not_before;
  SystemTime not_after;
  std::optional<int> path_length;     // CAs only; >= 0
  std::vector<std::string> san_uris;  // e.g. DeviceSanUri(id)
  std::vector<std::string> san_dns;   // host names, optionally "*." wildcard
  std::vector<std::string> san_ips;   // IPv4 or IPv6 literals
};

// A self-signed certificate for `key`, with a random 16-byte positive serial. The signature is
// ecdsa-with-SHA256 for a P-256 key and Ed25519 for an Ed25519 key.
Result<Certificate> SelfSignCertificate(const CertificateProfile& profile, const PrivateKey& key);

// A certificate for `subject_key` signed by `issuer_key`, which must belong to `issuer`, a CA
// certificate (kInvalidArgument otherwise). The signature algorithm follows the issuer's key.
Result<Certificate> IssueCertificate(const CertificateProfile& profile,
                                     const PublicKey& subject_key, const Certificate& issuer,
                                     const PrivateKey& issuer_key);

// The bootstrap credential of a device that has no certificate yet: a self-signed client
// certificate over its identity key whose single SAN is "urn:moat:device:<id>". <id> is
// `device_id` if given (a TPM device's ID is derived from its endorsement key, not from this
// key), else the SHA-256 of the identity key itself. It asserts nothing but "I hold this key and
// call myself <id>", which the TLS handshake half proves; moat-service accepts it on the
// attestation endpoints only and checks the key (or, for a TPM device, credential activation
// and the quote) against what the manufacturer registered.
Result<Certificate> SelfCertifiedDeviceCertificate(const PrivateKey& identity_key,
                                                   SystemTime not_before, SystemTime not_after,
                                                   std::string_view device_id = {});
// True if `cert` is such a certificate: self-issued, its signature verifies with its own key,
// a P-256 key, not a CA, EKU clientAuth, exactly one SAN (a device URI). Validity dates are not
// checked: they prove nothing here. Nor is the device ID: the service does that against its
// registry.
bool IsSelfCertifiedDeviceCertificate(const Certificate& cert);

// Verifies leaf -> intermediates -> one of `roots` as of time `at`, with RFC 5280 strict
// checks (X509_V_FLAG_X509_STRICT). With `purpose`, the chain must also be fit for it and the
// leaf must carry that extendedKeyUsage explicitly. Failure is kVerificationFailed naming
// OpenSSL's reason, the depth and the certificate, e.g.
// "certificate chain: certificate has expired (depth 0, CN=device)". Empty `roots` is
// kInvalidArgument.
Result<void> VerifyCertificateChain(const Certificate& leaf,
                                    std::span<const Certificate> intermediates,
                                    std::span<const Certificate> roots, SystemTime at,
                                    std::optional<ExtendedKeyUsage> purpose = std::nullopt);

// The device SAN convention: "urn:moat:device:" + the device ID (64 lowercase hex digits).
inline constexpr std::string_view kDeviceSanPrefix = "urn:moat:device:";
std::string DeviceSanUri(std::string_view device_id_hex);

// The device ID named by the certificate's single "urn:moat:device:" SAN URI: 64 lowercase hex
// digits. kNotFound if there is no such SAN; kInvalidArgument if there are several (compared
// case-insensitively, so "URN:MOAT:DEVICE:" counts) or the ID is not 64 lowercase hex digits.
Result<std::string> DeviceIdFromCertificate(const Certificate& cert);

// A degenerate PKCS#7 SignedData holding only `certs` ("certs-only", as
// `openssl crl2pkcs7 -nocrl` makes), DER-encoded. At least one certificate.
Result<std::vector<uint8_t>> CertificatesToPkcs7Der(std::span<const Certificate> certs);

}  // namespace moat::crypto
