#include "service/attestation_policy.h"

#include <fmt/format.h>

#include "core/encoding.h"

namespace moat::service {

MeasurementVerdict EvaluateMeasurements(const formats::MeasurementLog& log,
                                        std::span<const ReferenceValue> reference_values) {
  MeasurementVerdict verdict;
  size_t failures = 0;
  auto fail = [&](std::string message) {
    if (++failures <= kMaxVerdictFailures) verdict.failures.push_back(std::move(message));
  };
  bool os_measured = false;
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const formats::Measurement& m = log.entries[i];
    const std::string_view kind = formats::MeasurementKindName(m.kind);
    const bool boot = m.kind == formats::MeasurementKind::kBoot;
    if (boot ? m.pcr > 7 : m.pcr != formats::kMoatPcr) {
      fail(fmt::format("log[{}]: a {} measurement belongs in PCR {}, not PCR {}", i, kind,
                       boot ? "0-7" : std::to_string(formats::kMoatPcr), m.pcr));
      continue;
    }
    if (m.kind == formats::MeasurementKind::kOs) os_measured = true;
    size_t known_for_name = 0;
    bool matched = false;
    for (const ReferenceValue& r : reference_values) {
      if (r.kind != m.kind || r.name != m.name) continue;
      ++known_for_name;
      if (r.digest == m.digest) matched = true;
    }
    if (matched) continue;
    const std::string digest = HexEncode(m.digest);
    if (known_for_name == 0) {
      fail(fmt::format("{} '{}' (sha256 {}) has no reference value in this tenant", kind, m.name,
                       digest));
    } else {
      fail(fmt::format("{} '{}' has sha256 {}, which is not one of its {} known-good value(s)",
                       kind, m.name, digest, known_for_name));
    }
  }
  if (!os_measured) fail("the log has no OS measurement");
  if (failures > kMaxVerdictFailures) {
    verdict.failures.push_back(fmt::format("... and {} more", failures - kMaxVerdictFailures));
  }
  verdict.passed = failures == 0;
  return verdict;
}

}  // namespace moat::service
