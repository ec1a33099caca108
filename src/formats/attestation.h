// Attestation wire format: the measurement log and the evidence a device presents to get
// its certificates (device plane, POST /device/v1/attestation).
//
// The log follows PCR semantics: each entry names a register, and replaying the log from
// 32 zero bytes with value = SHA-256(value || entry.digest) yields what the registers hold.
// A software root of trust (development store, PKCS#11) signs the evidence with the device's
// identity key; a TPM (later) answers with a TPM2_Quote over the same registers, carried in
// the optional `tpm2_quote` member, so the log and replay are the same for both.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "core/json.h"
#include "crypto/digest.h"
#include "formats/tpm2.h"

namespace moat::formats {

// Registers: 0-7 hold the platform boot chain as firmware measures it; Moat extends the OS
// image and each app image as installed into kMoatPcr.
inline constexpr uint32_t kMoatPcr = 13;
inline constexpr uint32_t kMaxPcr = 23;

enum class MeasurementKind { kBoot, kOs, kApp };
std::string_view MeasurementKindName(MeasurementKind kind);  // "boot", "os", "app"

struct Measurement {
  uint32_t pcr = kMoatPcr;
  MeasurementKind kind = MeasurementKind::kApp;
  std::string name;     // "bootloader", "os", or an app's component ID
  std::string version;  // informational; may be empty
  crypto::Sha256Digest digest{};

  bool operator==(const Measurement&) const = default;
};

struct MeasurementLog {
  std::vector<Measurement> entries;
  bool operator==(const MeasurementLog&) const = default;
};

inline constexpr size_t kMaxMeasurements = 512;

// Replays the log: register index -> final value.
std::map<uint32_t, crypto::Sha256Digest> ReplayMeasurementLog(const MeasurementLog& log);
// Extends `value` with `digest` per PCR semantics (the same function the key stores use).
using crypto::ExtendPcr;

Json ToJson(const MeasurementLog& log);
Result<MeasurementLog> MeasurementLogFromJson(const Json& json, std::string_view path = "log");

enum class EvidenceFormat { kSignature, kTpm2Quote };

struct AttestationEvidence {
  std::string device_id;       // 64 lowercase hex: SHA-256 of the identity key's SPKI DER
  std::vector<uint8_t> nonce;  // the server's challenge, 32 bytes
  MeasurementLog log;
  std::string os_version;
  EvidenceFormat format = EvidenceFormat::kSignature;
  std::vector<uint8_t> signature;  // identity key over AttestationSigningInput() (both formats)
  // kTpm2Quote: the TPM's quote, qualifying data SHA-256(AttestationSigningInput()), and the
  // answer to the challenge's credential (docs/service-api.md). Absent for kSignature.
  std::optional<Tpm2Quote> tpm2_quote;
};

// The bytes the identity key signs: a domain-separation label, the device ID, the nonce and
// the SHA-256 of the log's canonical JSON. Binding the nonce makes replays useless; binding the
// log makes it impossible to swap measurements after signing.
std::vector<uint8_t> AttestationSigningInput(const AttestationEvidence& evidence);

Json ToJson(const AttestationEvidence& evidence);
Result<AttestationEvidence> AttestationEvidenceFromJson(const Json& json,
                                                        std::string_view path = "evidence");

// Checks a device ID's shape: 64 lowercase hex characters.
Result<void> ValidateDeviceId(std::string_view device_id);

}  // namespace moat::formats
