// Tpm2KeyStore: the device's root of trust in a TPM 2.0 (tpm2-tss ESAPI over the TCTI loader).
//
// Keys. Every key is an ECC P-256 signing key (fixedTPM, fixedParent, sensitiveDataOrigin)
// created under a persistent storage primary key, the SRK (ECC P-256, restricted decrypt,
// created and made persistent at `srk_handle` if missing). The TPM returns the key wrapped
// by the SRK; the store keeps it in <dir>/srk-<first 8 bytes of the SRK's name, hex>/ (0700;
// a cleared or replaced TPM has another SRK, so its store starts empty), per label:
//   <label>.pub    TPM2B_PUBLIC, TPM wire format (the public area: P-256 point, attributes)
//   <label>.priv   TPM2B_PRIVATE, TPM wire format: the private part encrypted and integrity
//                  protected under the SRK's seed; useless without this TPM's owner hierarchy
//   <label>.pem    the same two blobs as a "TSS2 PRIVATE KEY" PEM with parent = srk_handle, the
//                  format OpenSSL's tpm2 provider (tpm2-openssl) and tpm2-tools load
// All files are 0600. Signing loads the key into the TPM, signs, and flushes it.
//
// Registers. Interface register r is TPM PCR r of the SHA-256 bank, except that the Moat
// register formats::kMoatPcr (13) and TPM PCR `moat_pcr` trade places (by default they are
// the same, 13: not resettable, so nothing can erase a measurement until the next boot).
// Registers reading all zeros (never extended) or all ones (locality PCRs 17-22) are absent.
//
// Attestation. Attest() signs the input with the identity key (like every store) and adds a
// TPM2_Quote by the attestation key (AK: restricted ECC P-256 signing key, ECDSA/SHA-256,
// under the SRK, kept as .ak.pub/.ak.priv) over PCRs 0-7 and the Moat PCR, with
// qualifying data SHA-256(signing input). CertifyKey() has the AK certify a key (the TLS
// key), which proves to a verifier that the key lives in this TPM.
//
// TLS. TlsKey() returns a crypto::PrivateKey whose signatures the TPM makes through this
// store's connection (PrivateKey::FromSigner), so the key never exists outside the TPM.
// The key's .pem also loads through tpm2-openssl (PrivateKey::FromProvider), which opens a
// TPM connection of its own: fine on /dev/tpmrm0, but swtpm serves one connection at a time,
// so the store does not use that path itself (docs/rot.md).
//
// Connection. One TCTI connection, held from Open until the store and every TlsKey it gave
// out are gone; calls are serialised by a mutex (TLS handshakes may sign from other threads).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "rot/key_store.h"

namespace moat::rot {

struct Tpm2Options {
  std::filesystem::path dir;  // key blobs; created 0700 if missing
  // TCTI loader configuration: "swtpm:host=127.0.0.1,port=2321", "device:/dev/tpmrm0",
  // "mssim:host=..,port=..".
  std::string tcti = "device:/dev/tpmrm0";
  uint32_t srk_handle = 0x81000001;  // TCG-recommended SRK handle
  uint32_t moat_pcr = 13;            // TPM PCR holding Moat's measurements (13, 16 or 23)
  // The endorsement key: persistent handle (swtpm_setup and many vendors persist the RSA EK
  // at 0x81010001, the ECC one at 0x81010002) and its certificate's NV index (TCG: RSA 2048
  // 0x01c00002, ECC P-256 0x01c0000a). The index also says which EK to recreate when none is
  // persistent at ek_handle: kEccP256EkCertificateNvIndex selects the ECC P-256 EK (template
  // L-2), anything else the RSA 2048 one (L-1).
  uint32_t ek_handle = 0x81010001;
  uint32_t ek_certificate_nv_index = 0x01c00002;
};
inline constexpr uint32_t kEccP256EkCertificateNvIndex = 0x01c0000a;

// The TPM's endorsement key, the device identity the manufacturer certified.
struct EndorsementKey {
  std::vector<uint8_t> tpm_public;   // TPM2B_PUBLIC, TPM wire format (input to MakeCredential)
  std::vector<uint8_t> name;         // TPM name: 0x000b || SHA-256(TPMT_PUBLIC)
  std::vector<uint8_t> certificate;  // DER X.509 from NV; empty if the TPM has none
  // Hex SHA-256 of the TPMT_PUBLIC (the name's digest): a device ID derived from the EK.
  std::string DeviceId() const;
};

class Tpm2KeyStore final : public KeyStore {
 public:
  // Connects, starts the TPM if it is not started, and makes sure the SRK exists.
  // kUnavailable if the TCTI cannot connect; kFailedPrecondition if srk_handle holds
  // something that is not a storage key.
  static Result<std::unique_ptr<Tpm2KeyStore>> Open(const Tpm2Options& options);
  ~Tpm2KeyStore() override;

  std::string_view backend() const override { return "tpm2"; }
  Result<crypto::PublicKey> CreateKey(std::string_view label) override;
  Result<crypto::PublicKey> GetPublicKey(std::string_view label) const override;
  Result<std::vector<uint8_t>> SignDigest(std::string_view label,
                                          const crypto::Sha256Digest& digest) override;
  Result<crypto::PrivateKey> TlsKey(std::string_view label) override;
  Result<void> Extend(uint32_t pcr, const crypto::Sha256Digest& digest) override;
  Result<std::map<uint32_t, crypto::Sha256Digest>> ReadRegisters() const override;
  Result<AttestationProof> Attest(std::span<const uint8_t> signing_input) override;

  // The EK's public area and certificate. Without a persistent EK at ek_handle, the default
  // EK (TCG template L-1 RSA 2048, or L-2 ECC P-256 when ek_certificate_nv_index is
  // kEccP256EkCertificateNvIndex) is recreated in the endorsement hierarchy (deterministic:
  // same key until the TPM is reset); kNotFound if that fails too.
  Result<EndorsementKey> GetEndorsementKey() const;

  // The attestation key's public key (created with the first Attest if missing).
  Result<crypto::PublicKey> EnsureAttestationKey();
  // The AK's TPM2B_PUBLIC, TPM wire format (formats::TpmName of it is AttestationKeyName()).
  Result<std::vector<uint8_t>> AttestationKeyPublicArea();
  // The AK's TPM name (0x000b || SHA-256(TPMT_PUBLIC)): what MakeCredential binds to.
  Result<std::vector<uint8_t>> AttestationKeyName();

  // TPM2_Certify of key `label` by the AK, with `qualifying_data` (at most 64 bytes; the
  // attestor passes formats::CertifyQualifyingData(nonce)): the AK's signed statement that a key
  // with this public area is loaded in this TPM. The verifier checks it with
  // formats::VerifyTpm2Certify. kNotFound if the key does not exist.
  Result<formats::Tpm2Certify> CertifyKey(std::string_view label,
                                          std::span<const uint8_t> qualifying_data);

  // TPM2_ActivateCredential: the verifier ran MakeCredential(EK public, AK name, secret) and
  // sent `credential_blob` (TPM2B_ID_OBJECT) and `encrypted_secret` (TPM2B_ENCRYPTED_SECRET),
  // both in TPM wire format. Only this TPM, holding that EK's private key and this AK, can
  // recover the secret, which the device returns to prove both. The EK is authorised by its
  // standard policy (PolicySecret of the endorsement hierarchy, empty auth).
  // kVerificationFailed if the TPM refuses (another EK, another AK, tampered blob).
  Result<std::vector<uint8_t>> ActivateCredential(std::span<const uint8_t> credential_blob,
                                                  std::span<const uint8_t> encrypted_secret);

  // Path of `label`'s TSS2 PRIVATE KEY PEM (for tpm2-openssl / tpm2-tools).
  std::filesystem::path KeyFile(std::string_view label) const;

  struct Context;  // the ESAPI connection, shared with TLS keys

 private:
  explicit Tpm2KeyStore(Tpm2Options options, std::shared_ptr<Context> context)
      : options_(std::move(options)), context_(std::move(context)) {}
  uint32_t TpmPcr(uint32_t reg) const;
  uint32_t RegisterOf(uint32_t tpm_pcr) const;

  Tpm2Options options_;
  std::shared_ptr<Context> context_;
};

}  // namespace moat::rot
