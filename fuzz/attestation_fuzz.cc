// Fuzzes the attestation evidence reader (the body of POST /device/v1/attestation, parsed by
// moat-service from any device holding a registered key). Whatever parses must come back
// unchanged through ToJson -> parse (a mismatch traps), and the signing input and the replay
// of its log must not crash on it. The TPM structures the service parses from the evidence
// (TPMS_ATTEST of the quote and of the TLS key's certify, TPM2B_PUBLIC of the AK and the TLS
// key) are fuzzed both from the raw input and from the evidence's blobs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/json.h"
#include "formats/attestation.h"
#include "formats/tpm2.h"

namespace {

void ParseTpmStructures(std::span<const uint8_t> bytes) {
  (void)moat::formats::ParseQuoteAttest(bytes);
  (void)moat::formats::ParseCertifyAttest(bytes);
  if (auto pub = moat::formats::ParseTpm2bPublic(bytes)) {
    (void)moat::formats::TpmName(*pub);
    (void)moat::formats::EccPoint(*pub);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ParseTpmStructures({data, size});
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json =
      moat::ParseJson(text, "body", moat::JsonLimits{.max_bytes = 256 * 1024, .max_depth = 8});
  if (!json) return 0;
  if (auto evidence = moat::formats::AttestationEvidenceFromJson(*json)) {
    const std::string once = moat::DumpJson(moat::formats::ToJson(*evidence));
    auto again = moat::formats::AttestationEvidenceFromJson(*moat::ParseJson(once, "again"));
    if (!again || moat::DumpJson(moat::formats::ToJson(*again)) != once) __builtin_trap();
    if (moat::formats::AttestationSigningInput(*evidence) !=
        moat::formats::AttestationSigningInput(*again)) {
      __builtin_trap();
    }
    (void)moat::formats::ReplayMeasurementLog(evidence->log);
    if (const auto& q = evidence->tpm2_quote) {
      ParseTpmStructures(q->attest);
      ParseTpmStructures(q->ak_tpm_public);
      if (q->certify) {
        ParseTpmStructures(q->certify->attest);
        ParseTpmStructures(q->certify->key_tpm_public);
      }
    }
  }
  if (auto log = moat::formats::MeasurementLogFromJson(*json)) {
    auto again = moat::formats::MeasurementLogFromJson(moat::formats::ToJson(*log));
    if (!again || !(*again == *log)) __builtin_trap();
  }
  return 0;
}
