// Pkcs11KeyStore: keys on a PKCS#11 token (a secure element, an HSM; SoftHSM2 in tests).
//
// The module (a shared library) is dlopened from the configured path and initialised once per
// process (shared by every store using that path). The store logs in to the token with the
// given label as the user, with a PIN read from a file (mode 0600 enforced) or an environment
// variable; the PIN is never logged or kept after login.
//
// Keys. CreateKey runs C_GenerateKeyPair (CKM_EC_KEY_PAIR_GEN, P-256) with a private key that
// is CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE and not CKA_EXTRACTABLE, so the token never reveals
// it; both halves carry CKA_LABEL "<label_prefix><label>" and CKA_ID SHA-256 of that label.
// SignDigest is C_Sign with CKM_ECDSA over the digest; the token's r || s becomes DER.
//
// TLS. TlsKey returns a crypto::PrivateKey that signs through this store's session
// (PrivateKey::FromSigner): the key stays on the token, and the process needs neither the
// libp11 engine nor a second login (docs/rot.md explains the choice).
//
// Registers. A token has no PCRs: the registers live in this process's memory (reset with the
// process, as the software store's), and attestation is the identity key's signature over the
// signing input, which binds the measurement log. This proves which token signed, not that the
// log is true: a compromised host can extend whatever it likes (docs/rot.md, threat model).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "rot/key_store.h"

namespace moat::rot {

struct Pkcs11Options {
  std::string module;                // e.g. /usr/lib/softhsm/libsofthsm2.so
  std::string token_label;           // CKA token label, e.g. "moat"
  std::filesystem::path pin_file;    // the user PIN, first line; mode 0600 or stricter
  std::string pin_env;               // or: the name of an environment variable holding it
  std::string label_prefix = "moat/";  // CKA_LABEL namespace on a shared token
};

class Pkcs11KeyStore final : public KeyStore {
 public:
  // kInvalidArgument for bad options; kUnavailable if the module cannot be loaded or the
  // token is absent; kUnauthenticated if the PIN is refused.
  static Result<std::unique_ptr<Pkcs11KeyStore>> Open(const Pkcs11Options& options);
  ~Pkcs11KeyStore() override;

  std::string_view backend() const override { return "pkcs11"; }
  Result<crypto::PublicKey> CreateKey(std::string_view label) override;
  Result<crypto::PublicKey> GetPublicKey(std::string_view label) const override;
  Result<std::vector<uint8_t>> SignDigest(std::string_view label,
                                          const crypto::Sha256Digest& digest) override;
  Result<crypto::PrivateKey> TlsKey(std::string_view label) override;
  Result<void> Extend(uint32_t pcr, const crypto::Sha256Digest& digest) override;
  Result<std::map<uint32_t, crypto::Sha256Digest>> ReadRegisters() const override;
  Result<AttestationProof> Attest(std::span<const uint8_t> signing_input) override;

  // Asks the token for the private key's CKA_VALUE. It exists to show that this fails: the
  // token answers CKR_ATTRIBUTE_SENSITIVE and this returns kPermissionDenied.
  Result<std::vector<uint8_t>> TryExportPrivateKey(std::string_view label);

  struct Session;  // the module, the logged-in session; shared with TLS keys

 private:
  Pkcs11KeyStore(Pkcs11Options options, std::shared_ptr<Session> session)
      : options_(std::move(options)), session_(std::move(session)) {}

  Pkcs11Options options_;
  std::shared_ptr<Session> session_;
  MemoryRegisters registers_;
};

}  // namespace moat::rot
