#include "device/agent/attestor.h"

#include "rot/tpm2_key_store.h"

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "formats/json_reader.h"
#include "net/https_client.h"

namespace moat::device::agent {
namespace {

constexpr size_t kMaxCertificateFileBytes = 64 * 1024;
// A credential about to expire is not worth a handshake.
constexpr auto kMinRemainingValidity = std::chrono::seconds(60);

std::optional<CertificateChain> LoadChain(const std::filesystem::path& path) {
  auto text = ReadFile(path, kMaxCertificateFileBytes);
  if (!text) return std::nullopt;
  auto certs = crypto::Certificate::ParsePemChain(*text, 4);
  if (!certs || certs->empty()) {
    log::Warn("ignoring {}: {}", path.string(), certs ? "empty" : certs.error().message());
    return std::nullopt;
  }
  return CertificateChain{std::move(*certs)};
}

bool UsableAt(const std::optional<CertificateChain>& c, SystemTime now) {
  return c && c->leaf().NotBefore() <= now && now + kMinRemainingValidity < c->leaf().NotAfter();
}

// The service's problem detail, or the start of the body.
std::string Detail(const net::HttpResponse& r) {
  auto j = ParseJson(r.body, "response");
  if (j && j->is_object() && j->contains("detail") && (*j)["detail"].is_string()) {
    return (*j)["detail"].get<std::string>();
  }
  return r.body.substr(0, 200);
}

Error FromResponse(std::string_view what, const net::HttpResponse& r) {
  const ErrorCode code = r.status == 401 || r.status == 403 ? ErrorCode::kPermissionDenied
                         : r.status >= 500                  ? ErrorCode::kUnavailable
                                                            : ErrorCode::kInvalidArgument;
  return Error(code, fmt::format("{}: HTTP {}: {}", what, r.status, Detail(r)));
}

Result<CertificateChain> ParseChain(const Json& j, std::string_view field) {
  if (!j.contains(field) || !j[field].is_string()) {
    return Fail(ErrorCode::kInvalidArgument, "attestation response: no '{}'", field);
  }
  auto certs = crypto::Certificate::ParsePemChain(j[field].get<std::string>(), 4);
  if (!certs) return Fail(certs.error().WithContext(fmt::format("attestation response {}", field)));
  if (certs->empty()) {
    return Fail(ErrorCode::kInvalidArgument, "attestation response: empty '{}'", field);
  }
  return CertificateChain{std::move(*certs)};
}

std::string ChainPem(const CertificateChain& c) {
  std::string out;
  for (const auto& cert : c.certificates) out += cert.ToPem();
  return out;
}

}  // namespace

std::string_view CredentialKindName(CredentialKind kind) {
  switch (kind) {
    case CredentialKind::kIdentity:
      return "identity";
    case CredentialKind::kUpdate:
      return "update";
    case CredentialKind::kClient:
      return "client";
  }
  return "identity";
}

Result<std::string> DeviceId(const rot::KeyStore& keys) {
  // A TPM device is known by its endorsement key (what its manufacturer registered with the
  // EK certificate); other stores by their identity key.
  if (const auto* tpm = dynamic_cast<const rot::Tpm2KeyStore*>(&keys)) {
    MOAT_ASSIGN_OR_RETURN(rot::EndorsementKey ek, tpm->GetEndorsementKey());
    return ek.DeviceId();
  }
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey identity, keys.GetPublicKey(rot::kIdentityKeyLabel));
  return rot::DeviceIdOf(identity);
}

Attestor::Attestor(const Config& config, rot::KeyStore& keys, const Clock& clock,
                   crypto::Certificate service_root)
    : config_(config),
      keys_(keys),
      clock_(clock),
      service_root_(std::move(service_root)),
      layout_(config.state_dir) {}

Result<std::unique_ptr<net::HttpsClient>> Attestor::Connect(bool certified_only,
                                                            size_t max_response_bytes,
                                                            std::chrono::seconds timeout) const {
  const SystemTime now = clock_.Now();
  net::HttpsClientConfig http{.base_url = config_.service_url};
  http.tls.server_roots = {service_root_};
  http.timeout = timeout;
  http.max_response_bytes = max_response_bytes;
  const CredentialKind kind = BestCredential();
  if (kind == CredentialKind::kIdentity) {
    if (certified_only) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the device has no valid certificate yet (it has not attested)");
    }
    // SECURITY: the bootstrap certificate claims only "I hold this key"; its dates do not
    // matter to the service, and the handshake proves possession.
    MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey identity_key, keys_.TlsKey(rot::kIdentityKeyLabel));
    MOAT_ASSIGN_OR_RETURN(std::string device_id, DeviceId(keys_));
    MOAT_ASSIGN_OR_RETURN(http.tls.certificate,
                          crypto::SelfCertifiedDeviceCertificate(identity_key,
                                                                 now - std::chrono::hours(1),
                                                                 now + std::chrono::hours(1),
                                                                 device_id));
    http.tls.key = identity_key;
  } else {
    auto chain =
        kind == CredentialKind::kClient ? SavedClientCertificate() : SavedUpdateCertificate();
    MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey tls_key, keys_.TlsKey(rot::kTlsClientKeyLabel));
    http.tls.certificate = chain->leaf();
    http.tls.chain.assign(chain->certificates.begin() + 1, chain->certificates.end());
    http.tls.key = tls_key;
  }
  log::Debug("connecting with the {} credential", CredentialKindName(kind));
  return net::HttpsClient::Create(std::move(http));
}

std::optional<CertificateChain> Attestor::SavedClientCertificate() const {
  return LoadChain(layout_.client_certificate());
}
std::optional<CertificateChain> Attestor::SavedUpdateCertificate() const {
  return LoadChain(layout_.update_certificate());
}

CredentialKind Attestor::BestCredential() const {
  const SystemTime now = clock_.Now();
  if (UsableAt(SavedClientCertificate(), now)) return CredentialKind::kClient;
  if (UsableAt(SavedUpdateCertificate(), now)) return CredentialKind::kUpdate;
  return CredentialKind::kIdentity;
}

Result<AttestationOutcome> Attestor::AttestOnce(const formats::MeasurementLog& log,
                                                const std::string& os_version) {
  const SystemTime now = clock_.Now();
  MOAT_ASSIGN_OR_RETURN(const std::string device_id, DeviceId(keys_));
  auto* tpm = dynamic_cast<rot::Tpm2KeyStore*>(&keys_);
  MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey tls_key, keys_.TlsKey(rot::kTlsClientKeyLabel));

  MOAT_ASSIGN_OR_RETURN(auto client, Connect(/*certified_only=*/false));

  // 1. The challenge. A TPM device names its attestation key, so that the service can make a
  // credential for it (docs/service-api.md, "TPM devices").
  std::string challenge_body;
  if (tpm != nullptr) {
    MOAT_TRY(tpm->EnsureAttestationKey());
    MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> ak_public, tpm->AttestationKeyPublicArea());
    challenge_body = DumpJson(Json{
        {"ak_tpm_public", Base64Encode(ak_public, Base64Alphabet::kUrl, Base64Padding::kWithout)}});
  }
  MOAT_ASSIGN_OR_RETURN(net::HttpResponse challenge,
                        client->Send("POST", "/device/v1/attestation/challenge", challenge_body));
  if (challenge.status != 201) return Fail(FromResponse("attestation challenge", challenge));
  MOAT_ASSIGN_OR_RETURN(Json cj, ParseJson(challenge.body, "challenge response"));
  formats::ObjectReader cr(cj, "challenge response");
  MOAT_ASSIGN_OR_RETURN(std::string nonce_text, cr.RequiredString("nonce", 64));
  auto nonce = Base64Decode(nonce_text, Base64Alphabet::kUrl, Base64Padding::kWithout);
  if (!nonce || nonce->size() != 32) {
    return Fail(ErrorCode::kInvalidArgument, "challenge response: the nonce is not 32 bytes");
  }

  // 2. Evidence, signed inside the key store.
  formats::AttestationEvidence evidence{
      .device_id = device_id, .nonce = std::move(*nonce), .log = log, .os_version = os_version};
  std::vector<uint8_t> activated;
  if (tpm != nullptr) {
    // Only this TPM (its EK's private key, this AK loaded) recovers the service's secret.
    if (!cj.contains("credential")) {
      return Fail(ErrorCode::kInvalidArgument,
                  "challenge response: no credential for this TPM device's attestation key");
    }
    formats::ObjectReader cred(cj["credential"], "challenge response.credential");
    cr.MarkSeen("credential");
    MOAT_ASSIGN_OR_RETURN(std::string blob_text, cred.RequiredString("credential_blob", 4096));
    MOAT_ASSIGN_OR_RETURN(std::string secret_text, cred.RequiredString("encrypted_secret", 4096));
    auto blob = Base64Decode(blob_text, Base64Alphabet::kUrl, Base64Padding::kWithout);
    auto secret = Base64Decode(secret_text, Base64Alphabet::kUrl, Base64Padding::kWithout);
    if (!blob || !secret) {
      return Fail(ErrorCode::kInvalidArgument, "challenge response.credential: not base64url");
    }
    MOAT_ASSIGN_OR_RETURN(activated, tpm->ActivateCredential(*blob, *secret));
    evidence.format = formats::EvidenceFormat::kTpm2Quote;
  }
  MOAT_ASSIGN_OR_RETURN(rot::AttestationProof proof,
                        keys_.Attest(formats::AttestationSigningInput(evidence)));
  evidence.signature = std::move(proof.signature);
  if (tpm != nullptr) {
    if (!proof.tpm2_quote) return Fail(ErrorCode::kInternal, "the TPM store made no quote");
    evidence.tpm2_quote = std::move(*proof.tpm2_quote);
    evidence.tpm2_quote->activated_secret = std::move(activated);
    // The AK certifies the TLS key, so that the service issues the client certificate only
    // for a key that lives in this TPM (docs/service-api.md, "TPM devices").
    MOAT_ASSIGN_OR_RETURN(
        evidence.tpm2_quote->certify,
        tpm->CertifyKey(rot::kTlsClientKeyLabel, formats::CertifyQualifyingData(evidence.nonce)));
  }
  MOAT_ASSIGN_OR_RETURN(auto csr, crypto::CertificateRequest::Create(tls_key, device_id));
  Json body = {{"evidence", formats::ToJson(evidence)}, {"csr", csr.ToPem()}};

  // 3. Certificates.
  MOAT_ASSIGN_OR_RETURN(net::HttpResponse answer,
                        client->Send("POST", "/device/v1/attestation", DumpJson(body)));
  if (answer.status != 200) return Fail(FromResponse("attestation", answer));
  MOAT_ASSIGN_OR_RETURN(Json aj, ParseJson(answer.body, "attestation response"));
  if (!aj.is_object()) {
    return Fail(ErrorCode::kInvalidArgument, "attestation response: not an object");
  }
  AttestationOutcome out{.at = now};
  out.passed = aj.value("result", "") == "passed";
  if (aj.contains("failures") && aj["failures"].is_array()) {
    for (const auto& f : aj["failures"]) {
      if (f.is_string()) out.failures.push_back(f.get<std::string>());
    }
  }
  MOAT_ASSIGN_OR_RETURN(out.update, ParseChain(aj, "update_certificate"));
  if (out.passed) {
    MOAT_ASSIGN_OR_RETURN(CertificateChain c, ParseChain(aj, "client_certificate"));
    out.client = std::move(c);
  }
  // SECURITY: what the service issued must be for our key and our device.
  auto check = [&](const CertificateChain& c, std::string_view what) -> Result<void> {
    if (c.leaf().public_key().FingerprintHex() != tls_key.public_key().FingerprintHex()) {
      return Fail(ErrorCode::kVerificationFailed, "the {} certificate is not for our key", what);
    }
    auto id = crypto::DeviceIdFromCertificate(c.leaf());
    if (!id || *id != device_id) {
      return Fail(ErrorCode::kVerificationFailed, "the {} certificate names another device", what);
    }
    std::vector<crypto::Certificate> intermediates(c.certificates.begin() + 1,
                                                   c.certificates.end());
    const crypto::Certificate roots[] = {service_root_};
    return crypto::VerifyCertificateChain(c.leaf(), intermediates, roots, now);
  };
  MOAT_TRY(check(out.update, "update"));
  if (out.client) MOAT_TRY(check(*out.client, "client"));

  MOAT_TRY(MakeDirectories(layout_.certificates(), 0700));
  MOAT_TRY(AtomicWriteFile(layout_.update_certificate(), ChainPem(out.update), {.mode = 0644}));
  // After a failed attestation a still-valid client certificate stays until it expires (at
  // most 24 h): the service issues no new one, which is what revokes the device's access.
  if (out.client) {
    MOAT_TRY(AtomicWriteFile(layout_.client_certificate(), ChainPem(*out.client), {.mode = 0644}));
  }
  Json record = {{"at", FormatRfc3339(now)},
                 {"result", out.passed ? "passed" : "failed"},
                 {"failures", out.failures}};
  MOAT_TRY(AtomicWriteFile(layout_.attestation_record(), record.dump(2) + "\n", {.mode = 0644}));
  return out;
}

}  // namespace moat::device::agent
