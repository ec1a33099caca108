// Attestation policy: does a device's measurement log show only known-good software?
//
// A tenant keeps reference values: (kind, name, SHA-256) triples an operator vouches for
// (`moat reference-value add`). Deny by default: every entry of the log must equal a reference
// value of the same kind and name, and the log must measure the OS at least once. Where each
// kind lives follows formats/attestation.h: boot in PCRs 0-7, OS and apps in kMoatPcr.
//
// For an app, the digest is the SHA-256 of its image package file as installed, the same hash
// the image store keys images by, so an image's ID is its reference value.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "crypto/digest.h"
#include "formats/attestation.h"

namespace moat::service {

struct ReferenceValue {
  formats::MeasurementKind kind = formats::MeasurementKind::kApp;
  std::string name;
  crypto::Sha256Digest digest{};
};

struct MeasurementVerdict {
  bool passed = false;
  // Why it did not pass, one line each, at most kMaxVerdictFailures (then a "... and N more").
  std::vector<std::string> failures;
};

inline constexpr size_t kMaxVerdictFailures = 16;

MeasurementVerdict EvaluateMeasurements(const formats::MeasurementLog& log,
                                        std::span<const ReferenceValue> reference_values);

}  // namespace moat::service
