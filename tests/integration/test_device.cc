// moat-test-device: plays a device for the shell tests, which have curl but cannot sign
// attestation evidence.
//   moat-test-device enroll URL ROOT_PEM IDENTITY_KEY_PEM DEST_PREFIX
// Attests with the identity key (self-certified identity certificate, challenge, evidence whose
// log measures one OS, "moat-linux" with the SHA-256 of "moat-test-device os 1.0", and a fresh
// P-256 TLS key in the CSR) and writes DEST_PREFIX.crt (the
// client certificate, or the update certificate when attestation failed, followed by its tenant
// CA) and DEST_PREFIX.key (mode 0600), ready for `curl --cert ... --key ...`. Prints the result.
#include <chrono>
#include <iostream>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "crypto/x509.h"
#include "formats/attestation.h"
#include "net/https_client.h"

namespace {

using namespace moat;

Result<void> Enroll(const std::string& url, const std::string& root_pem_path,
                    const std::string& key_path, const std::string& prefix) {
  MOAT_ASSIGN_OR_RETURN(std::string root_pem, ReadFile(root_pem_path, 1 << 20));
  MOAT_ASSIGN_OR_RETURN(auto root, crypto::Certificate::FromPem(root_pem));
  MOAT_ASSIGN_OR_RETURN(std::string key_pem, ReadFile(key_path, 1 << 20));
  MOAT_ASSIGN_OR_RETURN(auto identity, crypto::PrivateKey::FromPem(key_pem));
  const std::string device_id = identity.public_key().FingerprintHex();
  const auto now = std::chrono::system_clock::now();
  MOAT_ASSIGN_OR_RETURN(
      auto boot_cert, crypto::SelfCertifiedDeviceCertificate(identity, now - std::chrono::hours(1),
                                                             now + std::chrono::hours(1)));
  net::HttpsClientConfig config{.base_url = url};
  config.tls.server_roots = {root};
  config.tls.certificate = boot_cert;
  config.tls.key = identity;
  MOAT_ASSIGN_OR_RETURN(auto client, net::HttpsClient::Create(config));
  MOAT_ASSIGN_OR_RETURN(auto challenge, client->Send("POST", "/device/v1/attestation/challenge"));
  if (challenge.status != 201) {
    return Fail(ErrorCode::kFailedPrecondition, "challenge: HTTP {}: {}", challenge.status,
                challenge.body);
  }
  MOAT_ASSIGN_OR_RETURN(Json cj, ParseJson(challenge.body, "challenge"));
  MOAT_ASSIGN_OR_RETURN(auto nonce, Base64Decode(cj.value("nonce", ""), Base64Alphabet::kUrl,
                                                 Base64Padding::kWithout));
  formats::MeasurementLog log{{{.pcr = formats::kMoatPcr,
                                .kind = formats::MeasurementKind::kOs,
                                .name = "moat-linux",
                                .version = "1.0",
                                .digest = crypto::Sha256("moat-test-device os 1.0")}}};
  formats::AttestationEvidence e{
      .device_id = device_id, .nonce = nonce, .log = log, .os_version = "1.0"};
  MOAT_ASSIGN_OR_RETURN(e.signature, identity.Sign(formats::AttestationSigningInput(e)));
  MOAT_ASSIGN_OR_RETURN(auto tls_key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
  MOAT_ASSIGN_OR_RETURN(auto csr, crypto::CertificateRequest::Create(tls_key, device_id));
  Json body = {{"evidence", formats::ToJson(e)}, {"csr", csr.ToPem()}};
  MOAT_ASSIGN_OR_RETURN(auto attested, client->Send("POST", "/device/v1/attestation", body.dump()));
  if (attested.status != 200) {
    return Fail(ErrorCode::kFailedPrecondition, "attestation: HTTP {}: {}", attested.status,
                attested.body);
  }
  MOAT_ASSIGN_OR_RETURN(Json aj, ParseJson(attested.body, "attestation"));
  const bool passed = aj.value("result", "") == "passed";
  const std::string chain = passed ? aj["client_certificate"].get<std::string>()
                                   : aj["update_certificate"].get<std::string>();
  MOAT_TRY(AtomicWriteFile(prefix + ".crt", chain, {.mode = 0644}));
  MOAT_ASSIGN_OR_RETURN(auto tls_pem, tls_key.ToPem());
  MOAT_TRY(AtomicWriteFile(prefix + ".key", tls_pem.view(), {.mode = 0600}));
  std::cout << "device " << device_id << " attestation " << aj.value("result", "") << "; wrote "
            << prefix << ".crt (" << (passed ? "client" : "update") << " certificate)\n";
  return Ok();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6 || std::string_view(argv[1]) != "enroll") {
    std::cerr << "usage: moat-test-device enroll URL ROOT_PEM IDENTITY_KEY_PEM DEST_PREFIX\n";
    return 2;
  }
  auto r = Enroll(argv[2], argv[3], argv[4], argv[5]);
  if (!r) {
    std::cerr << "moat-test-device: " << r.error().message() << "\n";
    return 1;
  }
  return 0;
}
