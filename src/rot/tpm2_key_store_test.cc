// Tpm2KeyStore specifics, each on a swtpm of its own: identity across restarts and resets,
// no export, TLS with a TPM-held key against openssl s_server, quotes and nonces, the EK, and
// the key files' compatibility with OpenSSL's tpm2 provider.
#include <gtest/gtest.h>

#include <fstream>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tctildr.h>

#include <cstdio>
#include <cstring>

#include "core/encoding.h"
#include "core/file.h"
#include "crypto/x509.h"
#include "rot/testing/swtpm.h"
#include "rot/testing/tls_peer.h"
#include "rot/tpm2_key_store.h"
#include "crypto/random.h"
#include "crypto/tpm_primitives.h"
#include "crypto/x509.h"
#include "formats/tpm2.h"
#include "rot/tpm2_quote.h"

namespace moat::rot {
namespace {

class Tpm2KeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::Swtpm::Available()) {
      GTEST_SKIP() << "swtpm/swtpm_setup not installed (scripts/install-deps.sh installs them)";
    }
    auto tmp = TempDir::Create("moat-tpm2");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto tpm = testing::Swtpm::Start(tmp_->path() / "swtpm");
    ASSERT_TRUE(tpm) << tpm.error().message();
    tpm_ = std::make_unique<testing::Swtpm>(std::move(*tpm));
  }

  Result<std::unique_ptr<Tpm2KeyStore>> Open() {
    return Tpm2KeyStore::Open({.dir = tmp_->path() / "store", .tcti = tpm_->tcti()});
  }

  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<testing::Swtpm> tpm_;
};

TEST_F(Tpm2KeyStoreTest, IdentitySurvivesAPowerCycle) {
  crypto::PublicKey identity = [&] {
    auto store = *Open();
    return *store->CreateKey(kIdentityKeyLabel);
  }();
  ASSERT_TRUE(tpm_->Restart());
  auto store = Open();
  ASSERT_TRUE(store) << store.error().message();
  auto again = (*store)->GetPublicKey(kIdentityKeyLabel);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, identity);
  auto sig = (*store)->Sign(kIdentityKeyLabel, AsBytes("after reboot"));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(identity.Verify("after reboot", *sig));
}

TEST_F(Tpm2KeyStoreTest, AResetTpmGivesANewIdentity) {
  std::string old_id, old_ek;
  {
    auto store = *Open();
    old_id = DeviceIdOf(*store->CreateKey(kIdentityKeyLabel));
    old_ek = store->GetEndorsementKey()->DeviceId();
  }
  // A new TPM (fresh state: new seeds) behind the same key-store directory.
  tpm_.reset();
  auto fresh = testing::Swtpm::Start(tmp_->path() / "swtpm2");
  ASSERT_TRUE(fresh) << fresh.error().message();
  tpm_ = std::make_unique<testing::Swtpm>(std::move(*fresh));
  auto store = Open();
  ASSERT_TRUE(store) << store.error().message();
  auto missing = (*store)->GetPublicKey(kIdentityKeyLabel);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  auto identity = (*store)->EnsureKey(kIdentityKeyLabel);
  ASSERT_TRUE(identity);
  EXPECT_NE(DeviceIdOf(*identity), old_id);
  EXPECT_NE((*store)->GetEndorsementKey()->DeviceId(), old_ek);
}

TEST_F(Tpm2KeyStoreTest, PrivateKeysCannotBeExported) {
  auto store = *Open();
  auto pub = *store->CreateKey(kTlsClientKeyLabel);
  auto tls = store->TlsKey(kTlsClientKeyLabel);
  ASSERT_TRUE(tls) << tls.error().message();
  EXPECT_FALSE(tls->ToPem()) << "a TPM key has no private bytes to write";
  // What is on disk is the TPM-wrapped blob, not a key OpenSSL can use on its own.
  auto pem = ReadFile(store->KeyFile(kTlsClientKeyLabel), 16 * 1024);
  ASSERT_TRUE(pem);
  EXPECT_TRUE(pem->starts_with("-----BEGIN TSS2 PRIVATE KEY-----"));
  EXPECT_FALSE(crypto::PrivateKey::FromPem(*pem));
}

TEST_F(Tpm2KeyStoreTest, TlsHandshakeWithATpmKeyAgainstOpenSslServer) {
  auto server = testing::OpenSslServer::Start(tmp_->path() / "s_server");
  ASSERT_TRUE(server) << server.error().message();
  auto store = *Open();
  ASSERT_TRUE(store->CreateKey(kTlsClientKeyLabel));
  auto key = store->TlsKey(kTlsClientKeyLabel);
  ASSERT_TRUE(key) << key.error().message();
  auto client = (*server)->ClientFor(*key);
  ASSERT_TRUE(client) << client.error().message();
  auto done = (*server)->Handshake(**client);
  EXPECT_TRUE(done) << done.error().message();
  // The TLS key keeps working after the store is closed: it holds the connection.
  store.reset();
  done = (*server)->Handshake(**client);
  EXPECT_TRUE(done) << done.error().message();
}

TEST_F(Tpm2KeyStoreTest, QuotesBindTheNonceAndThePcrs) {
  auto store = *Open();
  ASSERT_TRUE(store->CreateKey(kIdentityKeyLabel));
  auto app = crypto::Sha256("app image");
  ASSERT_TRUE(store->Extend(13, app));
  std::vector<uint8_t> old_input = {'o', 'l', 'd'};
  std::vector<uint8_t> new_input = {'n', 'e', 'w'};
  auto old_proof = store->Attest(old_input);
  ASSERT_TRUE(old_proof) << old_proof.error().message();
  ASSERT_TRUE(old_proof->tpm2_quote);
  const Tpm2Quote& q = *old_proof->tpm2_quote;
  auto ak = store->EnsureAttestationKey();
  ASSERT_TRUE(ak);
  EXPECT_EQ(ak->ToDer(), q.ak_public);
  EXPECT_TRUE(ak->Verify(q.attest, q.signature)) << "the AK signs the TPMS_ATTEST bytes";
  EXPECT_TRUE(VerifyTpm2Quote(q, old_input));
  // The Moat PCR (13 by default) holds the replayed measurement.
  EXPECT_EQ(q.pcr_values.at(13), crypto::ExtendPcr(crypto::Sha256Digest{}, app));
  EXPECT_EQ(q.pcrs, (std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 13}));

  // A quote over an old nonce does not answer a new one.
  auto stale = VerifyTpm2Quote(q, new_input);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code(), ErrorCode::kVerificationFailed);
  auto new_proof = *store->Attest(new_input);
  EXPECT_TRUE(VerifyTpm2Quote(*new_proof.tpm2_quote, new_input));

  // Claimed PCR values that the TPM did not quote are caught.
  Tpm2Quote forged = q;
  forged.pcr_values[13] = crypto::Sha256("clean image");
  EXPECT_EQ(VerifyTpm2Quote(forged, old_input).error().code(), ErrorCode::kVerificationFailed);
  Tpm2Quote tampered = q;
  tampered.attest.back() ^= 1;
  EXPECT_FALSE(VerifyTpm2Quote(tampered, old_input));
}

// The TPM's own TPM2_Certify output, checked by the service's pure verifier: the TLS key is a
// TPM-generated, non-duplicable signing key the AK vouches for, bound to the nonce.
TEST_F(Tpm2KeyStoreTest, TheAkCertifiesTheTlsKey) {
  auto store = *Open();
  auto tls = store->CreateKey(kTlsClientKeyLabel);
  ASSERT_TRUE(tls) << tls.error().message();
  const std::vector<uint8_t> nonce(32, 0x17);
  auto certified = store->CertifyKey(kTlsClientKeyLabel, formats::CertifyQualifyingData(nonce));
  ASSERT_TRUE(certified) << certified.error().message();
  auto ak = store->EnsureAttestationKey();
  ASSERT_TRUE(ak);
  auto ok = formats::VerifyTpm2Certify(*certified, *ak, nonce, *tls);
  EXPECT_TRUE(ok) << ok.error().message();
  auto info = formats::ParseCertifyAttest(certified->attest);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->name, formats::TpmName(*formats::ParseTpm2bPublic(certified->key_tpm_public)));
  // Another nonce, another key, another signer: refused.
  const std::vector<uint8_t> other_nonce(32, 0x18);
  EXPECT_EQ(formats::VerifyTpm2Certify(*certified, *ak, other_nonce, *tls).error().code(),
            ErrorCode::kVerificationFailed);
  auto identity = *store->EnsureKey(kIdentityKeyLabel);
  EXPECT_FALSE(formats::VerifyTpm2Certify(*certified, *ak, nonce, identity));
  EXPECT_FALSE(formats::VerifyTpm2Certify(*certified, identity, nonce, *tls));
  // A label without a key.
  auto missing = store->CertifyKey("no-such-key", formats::CertifyQualifyingData(nonce));
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST_F(Tpm2KeyStoreTest, MoatRegisterCanLiveInAnotherPcr) {
  auto store = *Tpm2KeyStore::Open(
      {.dir = tmp_->path() / "store", .tcti = tpm_->tcti(), .moat_pcr = 23});
  ASSERT_TRUE(store->CreateKey(kIdentityKeyLabel));
  auto d = crypto::Sha256("os");
  ASSERT_TRUE(store->Extend(13, d));
  auto regs = *store->ReadRegisters();
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs.at(13), crypto::ExtendPcr(crypto::Sha256Digest{}, d));
  auto proof = *store->Attest(AsBytes("x"));
  EXPECT_EQ(proof.tpm2_quote->pcr_values.at(23), regs.at(13));
  EXPECT_TRUE(VerifyTpm2Quote(*proof.tpm2_quote, AsBytes("x")));
}

TEST_F(Tpm2KeyStoreTest, EndorsementKeyAndCertificate) {
  auto store = *Open();
  auto ek = store->GetEndorsementKey();
  ASSERT_TRUE(ek) << ek.error().message();
  EXPECT_EQ(ek->name.size(), 34u);
  EXPECT_EQ(ek->DeviceId().size(), 64u);
  ASSERT_FALSE(ek->certificate.empty()) << "swtpm_setup --create-ek-cert stores one";
  // An RSA EK (which Moat's crypto does not take as a key type): check with openssl that the
  // certificate is for exactly this EK, which is what the service will verify.
  TPM2B_PUBLIC pub{};
  size_t offset = 0;
  ASSERT_EQ(Tss2_MU_TPM2B_PUBLIC_Unmarshal(ek->tpm_public.data(), ek->tpm_public.size(), &offset,
                                           &pub),
            TSS2_RC_SUCCESS);
  ASSERT_EQ(pub.publicArea.type, TPM2_ALG_RSA);
  std::string modulus = HexEncode(
      std::span<const uint8_t>(pub.publicArea.unique.rsa.buffer, pub.publicArea.unique.rsa.size));
  std::filesystem::path der = tmp_->path() / "ek.der";
  ASSERT_TRUE(AtomicWriteFile(der, ek->certificate));
  FILE* p = ::popen(("openssl x509 -inform DER -noout -modulus -in " + der.string()).c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[2048] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, p);
  ASSERT_EQ(::pclose(p), 0);
  std::string out(buf, n);
  for (auto& c : modulus) c = static_cast<char>(std::toupper(c));
  EXPECT_EQ(out, "Modulus=" + modulus + "\n");
}

TEST_F(Tpm2KeyStoreTest, WithoutAPersistentEkTheDefaultOneIsRecreated) {
  std::vector<uint8_t> persisted;
  {
    auto store = *Open();
    persisted = store->GetEndorsementKey()->tpm_public;
  }
  // 0x81010099 is empty: the store recreates the EK from the TCG default template, which
  // must be the very key swtpm_setup persisted and certified.
  auto store = *Tpm2KeyStore::Open(
      {.dir = tmp_->path() / "store", .tcti = tpm_->tcti(), .ek_handle = 0x81010099});
  auto ek = store->GetEndorsementKey();
  ASSERT_TRUE(ek) << ek.error().message();
  EXPECT_EQ(ek->tpm_public, persisted);
  EXPECT_FALSE(ek->certificate.empty());
}

TEST_F(Tpm2KeyStoreTest, KeyFilesLoadThroughOpenSslsTpm2Provider) {
  crypto::PublicKey pub = [&] {
    auto store = *Open();
    return *store->CreateKey(kTlsClientKeyLabel);
  }();
  std::filesystem::path file = (*Open())->KeyFile(kTlsClientKeyLabel);
  // The store is closed now: swtpm serves one connection, and the provider opens its own.
  auto key = crypto::PrivateKey::FromProvider(
      {.provider = "tpm2", .environment = {{"TPM2OPENSSL_TCTI", tpm_->tcti()}},
       .uri = file.string()});
  if (!key && key.error().code() == ErrorCode::kUnavailable) {
    GTEST_SKIP() << "tpm2-openssl provider not installed: " << key.error().message();
  }
  ASSERT_TRUE(key) << key.error().message();
  EXPECT_EQ(key->public_key(), pub);
  auto sig = key->Sign(std::string_view("via provider"));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(pub.Verify("via provider", *sig));
}

// The verifier's half of credential activation, done here with a TPM's own MakeCredential on
// a separate connection (the store must be closed: swtpm serves one connection at a time).
struct Credential {
  std::vector<uint8_t> blob, secret;
};
Result<Credential> MakeCredential(const std::string& tcti, const std::vector<uint8_t>& ek_public,
                                  const std::vector<uint8_t>& ak_name,
                                  const std::vector<uint8_t>& secret) {
  TSS2_TCTI_CONTEXT* tcti_ctx = nullptr;
  ESYS_CONTEXT* esys = nullptr;
  if (Tss2_TctiLdr_Initialize(tcti.c_str(), &tcti_ctx) != TSS2_RC_SUCCESS ||
      Esys_Initialize(&esys, tcti_ctx, nullptr) != TSS2_RC_SUCCESS) {
    return Fail(ErrorCode::kUnavailable, "cannot connect to {}", tcti);
  }
  TPM2B_PUBLIC pub{};
  size_t offset = 0;
  Tss2_MU_TPM2B_PUBLIC_Unmarshal(ek_public.data(), ek_public.size(), &offset, &pub);
  ESYS_TR handle = ESYS_TR_NONE;
  TSS2_RC rc = Esys_LoadExternal(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, nullptr, &pub,
                                 ESYS_TR_RH_NULL, &handle);
  Credential out;
  if (rc == TSS2_RC_SUCCESS) {
    TPM2B_DIGEST credential{};
    credential.size = static_cast<UINT16>(secret.size());
    std::memcpy(credential.buffer, secret.data(), secret.size());
    TPM2B_NAME name{};
    name.size = static_cast<UINT16>(ak_name.size());
    std::memcpy(name.name, ak_name.data(), ak_name.size());
    TPM2B_ID_OBJECT* blob = nullptr;
    TPM2B_ENCRYPTED_SECRET* enc = nullptr;
    rc = Esys_MakeCredential(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &credential,
                             &name, &blob, &enc);
    if (rc == TSS2_RC_SUCCESS) {
      out.blob.resize(sizeof *blob + 8);
      out.secret.resize(sizeof *enc + 8);
      size_t n1 = 0, n2 = 0;
      Tss2_MU_TPM2B_ID_OBJECT_Marshal(blob, out.blob.data(), out.blob.size(), &n1);
      Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(enc, out.secret.data(), out.secret.size(), &n2);
      out.blob.resize(n1);
      out.secret.resize(n2);
      Esys_Free(blob);
      Esys_Free(enc);
    }
    Esys_FlushContext(esys, handle);
  }
  Esys_Finalize(&esys);
  Tss2_TctiLdr_Finalize(&tcti_ctx);
  if (rc != TSS2_RC_SUCCESS) return Fail(ErrorCode::kInternal, "MakeCredential: 0x{:x}", rc);
  return out;
}

TEST_F(Tpm2KeyStoreTest, CredentialActivationProvesTheEkAndTheAk) {
  std::vector<uint8_t> ek_public, ak_name;
  {
    auto store = *Open();
    ek_public = store->GetEndorsementKey()->tpm_public;
    auto name = store->AttestationKeyName();
    ASSERT_TRUE(name) << name.error().message();
    ak_name = *name;
  }
  const std::vector<uint8_t> secret = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  auto credential = MakeCredential(tpm_->tcti(), ek_public, ak_name, secret);
  ASSERT_TRUE(credential) << credential.error().message();
  {
    auto store = *Open();
    auto recovered = store->ActivateCredential(credential->blob, credential->secret);
    ASSERT_TRUE(recovered) << recovered.error().message();
    EXPECT_EQ(*recovered, secret);
  }

  // Another device claiming this TPM's EK (its certificate is public) cannot activate a
  // credential made for it: its own TPM lacks that EK's private key.
  auto other_tpm = testing::Swtpm::Start(tmp_->path() / "other-swtpm");
  ASSERT_TRUE(other_tpm) << other_tpm.error().message();
  auto other = *Tpm2KeyStore::Open({.dir = tmp_->path() / "other", .tcti = other_tpm->tcti()});
  auto other_ak = *other->AttestationKeyName();
  other.reset();
  auto for_claimed_ek = MakeCredential(other_tpm->tcti(), ek_public, other_ak, secret);
  ASSERT_TRUE(for_claimed_ek) << for_claimed_ek.error().message();
  other = *Tpm2KeyStore::Open({.dir = tmp_->path() / "other", .tcti = other_tpm->tcti()});
  auto refused = other->ActivateCredential(for_claimed_ek->blob, for_claimed_ek->secret);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kVerificationFailed) << refused.error().message();
  // A refusal, not a broken TPM: the store still works.
  EXPECT_TRUE(other->EnsureKey(kIdentityKeyLabel));
  EXPECT_TRUE(other->Sign(kIdentityKeyLabel, AsBytes("still fine")));
}

// The service's path (formats/tpm2.h, no tpm2-tss): the EK rebuilt from its certificate alone
// gives the device's own EK-derived ID, and a pure MakeCredential for the AK activates in the TPM.
TEST_F(Tpm2KeyStoreTest, PureMakeCredentialFromTheEkCertificateActivates) {
  auto store = *Open();
  auto ek = store->GetEndorsementKey();
  ASSERT_TRUE(ek) << ek.error().message();
  auto rsa = crypto::RsaPublicKeyOfCertificateDer(ek->certificate);
  ASSERT_TRUE(rsa) << rsa.error().message();
  const std::vector<uint8_t> rebuilt = formats::DefaultRsaEkTpm2bPublic(rsa->modulus);
  EXPECT_EQ(rebuilt, ek->tpm_public) << "template L-1 from the certificate equals the TPM's EK";
  auto ek_public = formats::ParseTpm2bPublic(rebuilt);
  ASSERT_TRUE(ek_public) << ek_public.error().message();
  EXPECT_EQ(formats::EkDeviceId(*ek_public), ek->DeviceId());
  EXPECT_EQ(formats::TpmName(*ek_public), ek->name);
  // The chain: swtpm_setup's local CA signed it (the issuing CA alone is enough to register).
  std::ifstream issuer_file("/var/lib/swtpm-localca/issuercert.pem");
  std::string issuer_pem((std::istreambuf_iterator<char>(issuer_file)), {});
  auto issuer = crypto::CertificatesDerFromPem(issuer_pem);
  ASSERT_TRUE(issuer) << issuer.error().message();
  EXPECT_TRUE(crypto::VerifyEkCertificateDer(ek->certificate, *issuer, std::chrono::system_clock::now()));
  auto wrong_anchor = crypto::VerifyEkCertificateDer(ek->certificate, {}, std::chrono::system_clock::now());
  EXPECT_FALSE(wrong_anchor);

  auto ak_name = store->AttestationKeyName();
  ASSERT_TRUE(ak_name) << ak_name.error().message();
  const std::vector<uint8_t> secret = crypto::RandomBytes(32);
  auto made = formats::MakeCredential(*ek_public, *ak_name, secret, crypto::RandomBytes(32));
  ASSERT_TRUE(made) << made.error().message();
  auto recovered = store->ActivateCredential(made->credential_blob, made->encrypted_secret);
  ASSERT_TRUE(recovered) << recovered.error().message();
  EXPECT_EQ(*recovered, secret);

  // Bound to the AK's name: the same credential made for another name does not activate.
  std::vector<uint8_t> wrong_name = *ak_name;
  wrong_name.back() ^= 1;
  auto other = formats::MakeCredential(*ek_public, wrong_name, secret, crypto::RandomBytes(32));
  ASSERT_TRUE(other);
  auto refused = store->ActivateCredential(other->credential_blob, other->encrypted_secret);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kVerificationFailed);
}

// The ECC P-256 EK (template L-2), recreated because nothing is persisted at 0x81010002 (swtpm
// 0.7 persists an RSA 2048 and an ECC P-384 EK only): the pure template from its point is the
// TPM's EK, and the pure ECDH/KDFe MakeCredential activates in the TPM.
TEST_F(Tpm2KeyStoreTest, EccP256EkFromTemplateL2AndPureMakeCredentialActivates) {
  auto store = *Tpm2KeyStore::Open({.dir = tmp_->path() / "store",
                                    .tcti = tpm_->tcti(),
                                    .ek_handle = 0x81010002,
                                    .ek_certificate_nv_index = kEccP256EkCertificateNvIndex});
  auto ek = store->GetEndorsementKey();
  ASSERT_TRUE(ek) << ek.error().message();
  EXPECT_TRUE(ek->certificate.empty()) << "swtpm_setup writes no ECC P-256 EK certificate";
  auto parsed = formats::ParseTpm2bPublic(ek->tpm_public);
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_EQ(parsed->type, formats::kTpmAlgEcc);
  const std::vector<uint8_t> rebuilt =
      formats::DefaultEccEkTpm2bPublic(parsed->ecc_x, parsed->ecc_y);
  EXPECT_EQ(rebuilt, ek->tpm_public) << "template L-2 with the point equals the TPM's EK";
  EXPECT_EQ(formats::EkDeviceId(*parsed), ek->DeviceId());
  EXPECT_EQ(formats::TpmName(*parsed), ek->name);
  // Deterministic: the same EK again, and not the RSA one.
  auto again = store->GetEndorsementKey();
  EXPECT_EQ(again->tpm_public, ek->tpm_public);
  EXPECT_NE(Open().value()->GetEndorsementKey()->DeviceId(), ek->DeviceId());

  auto ak_name = store->AttestationKeyName();
  ASSERT_TRUE(ak_name) << ak_name.error().message();
  for (int i = 0; i < 3; ++i) {  // three ephemeral keys, three secrets
    const std::vector<uint8_t> secret = crypto::RandomBytes(32);
    auto made = formats::MakeCredential(*parsed, *ak_name, secret, crypto::RandomBytes(32));
    ASSERT_TRUE(made) << made.error().message();
    auto recovered = store->ActivateCredential(made->credential_blob, made->encrypted_secret);
    ASSERT_TRUE(recovered) << recovered.error().message();
    EXPECT_EQ(*recovered, secret);
  }
  // Bound to the AK's name, and to this EK.
  std::vector<uint8_t> wrong_name = *ak_name;
  wrong_name.back() ^= 1;
  const std::vector<uint8_t> small_secret = {1, 2, 3};
  auto other = formats::MakeCredential(*parsed, wrong_name, small_secret, crypto::RandomBytes(32));
  ASSERT_TRUE(other);
  EXPECT_EQ(
      store->ActivateCredential(other->credential_blob, other->encrypted_secret).error().code(),
      ErrorCode::kVerificationFailed);
  const std::vector<uint8_t> a =
      crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256)->public_key().ToRaw();
  const std::vector<uint8_t> b =
      crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256)->public_key().ToRaw();
  auto mixed = *formats::ParseTpm2bPublic(
      formats::DefaultEccEkTpm2bPublic(std::span(a).subspan(1, 32), std::span(b).subspan(33, 32)));
  EXPECT_FALSE(formats::MakeCredential(mixed, *ak_name, small_secret, crypto::RandomBytes(32)))
      << "a point off the curve (x and y of two different keys) is refused";
}

TEST_F(Tpm2KeyStoreTest, RefusesBadOptions) {
  EXPECT_EQ(Tpm2KeyStore::Open({.dir = tmp_->path() / "s", .tcti = tpm_->tcti(), .moat_pcr = 3})
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  auto unreachable = Tpm2KeyStore::Open(
      {.dir = tmp_->path() / "s", .tcti = "swtpm:host=127.0.0.1,port=1"});
  ASSERT_FALSE(unreachable);
  EXPECT_EQ(unreachable.error().code(), ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace moat::rot
