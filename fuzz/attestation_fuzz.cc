// Fuzzes the attestation evidence reader (the body of POST /device/v1/attestation, parsed by
// moat-service from any device holding a registered key). Whatever parses must come back
// unchanged through ToJson -> parse (a mismatch traps), and the signing input and the replay
// of its log must not crash on it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/json.h"
#include "formats/attestation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
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
  }
  if (auto log = moat::formats::MeasurementLogFromJson(*json)) {
    auto again = moat::formats::MeasurementLogFromJson(moat::formats::ToJson(*log));
    if (!again || !(*again == *log)) __builtin_trap();
  }
  return 0;
}
