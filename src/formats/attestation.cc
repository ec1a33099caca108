#include "formats/attestation.h"

#include <set>

#include "core/encoding.h"
#include "formats/json_reader.h"

namespace moat::formats {
namespace {

constexpr size_t kNonceBytes = 32;
constexpr size_t kMaxNameBytes = 128;
constexpr size_t kMaxSignatureBytes = 1024;

Result<MeasurementKind> ParseKind(std::string_view s, std::string_view path) {
  if (s == "boot") return MeasurementKind::kBoot;
  if (s == "os") return MeasurementKind::kOs;
  if (s == "app") return MeasurementKind::kApp;
  return Fail(ErrorCode::kInvalidArgument, "{}: unknown measurement kind '{}' (boot, os or app)",
              path, s.substr(0, 32));
}

}  // namespace

std::string_view MeasurementKindName(MeasurementKind kind) {
  switch (kind) {
    case MeasurementKind::kBoot:
      return "boot";
    case MeasurementKind::kOs:
      return "os";
    case MeasurementKind::kApp:
      return "app";
  }
  return "app";
}

std::map<uint32_t, crypto::Sha256Digest> ReplayMeasurementLog(const MeasurementLog& log) {
  std::map<uint32_t, crypto::Sha256Digest> pcrs;
  for (const auto& m : log.entries) {
    auto [it, inserted] = pcrs.try_emplace(m.pcr, crypto::Sha256Digest{});
    it->second = ExtendPcr(it->second, m.digest);
  }
  return pcrs;
}

Json ToJson(const MeasurementLog& log) {
  Json entries = Json::array();
  for (const auto& m : log.entries) {
    Json e = {{"pcr", m.pcr},
              {"kind", MeasurementKindName(m.kind)},
              {"name", m.name},
              {"sha256", HexEncode(m.digest)}};
    if (!m.version.empty()) e["version"] = m.version;
    entries.push_back(std::move(e));
  }
  return entries;
}

Result<MeasurementLog> MeasurementLogFromJson(const Json& json, std::string_view path) {
  MOAT_TRY(ExpectType(json, Json::value_t::array, path));
  if (json.size() > kMaxMeasurements) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} entries exceeds the limit of {}", path,
                json.size(), kMaxMeasurements);
  }
  MeasurementLog log;
  for (size_t i = 0; i < json.size(); ++i) {
    std::string p = JsonPathIndex(path, i);
    ObjectReader r(json[i], p);
    MOAT_TRY(r.status());
    Measurement m;
    MOAT_ASSIGN_OR_RETURN(int64_t pcr, r.RequiredInt("pcr", 0, kMaxPcr));
    m.pcr = static_cast<uint32_t>(pcr);
    MOAT_ASSIGN_OR_RETURN(std::string kind, r.RequiredString("kind", 16));
    MOAT_ASSIGN_OR_RETURN(m.kind, ParseKind(kind, JsonPathJoin(p, "kind")));
    MOAT_ASSIGN_OR_RETURN(m.name, r.RequiredString("name", kMaxNameBytes));
    MOAT_ASSIGN_OR_RETURN(m.version, r.OptionalString("version", kMaxNameBytes));
    MOAT_ASSIGN_OR_RETURN(std::string hex, r.RequiredString("sha256", 64));
    auto bytes = HexDecode(hex);
    if (!bytes || bytes->size() != 32) {
      return Fail(ErrorCode::kInvalidArgument, "{}.sha256: not 64 hexadecimal characters", p);
    }
    std::copy(bytes->begin(), bytes->end(), m.digest.begin());
    MOAT_TRY(r.NoOtherFields());
    log.entries.push_back(std::move(m));
  }
  return log;
}

std::vector<uint8_t> AttestationSigningInput(const AttestationEvidence& e) {
  static constexpr std::string_view kLabel = "moat attestation v1";
  std::vector<uint8_t> out(kLabel.begin(), kLabel.end());
  out.push_back(0);
  out.insert(out.end(), e.device_id.begin(), e.device_id.end());
  out.push_back(0);
  out.insert(out.end(), e.nonce.begin(), e.nonce.end());
  out.insert(out.end(), e.os_version.begin(), e.os_version.end());
  out.push_back(0);
  auto log_digest = crypto::Sha256(DumpJson(ToJson(e.log)));
  out.insert(out.end(), log_digest.begin(), log_digest.end());
  return out;
}

Json ToJson(const AttestationEvidence& e) {
  Json j{
      {"device_id", e.device_id},
      {"nonce", Base64Encode(e.nonce, Base64Alphabet::kUrl, Base64Padding::kWithout)},
      {"log", ToJson(e.log)},
      {"os_version", e.os_version},
      {"format", e.format == EvidenceFormat::kSignature ? "signature" : "tpm2-quote"},
      {"signature", Base64Encode(e.signature, Base64Alphabet::kUrl, Base64Padding::kWithout)}};
  if (e.tpm2_quote) j["tpm2_quote"] = ToJson(*e.tpm2_quote);
  return j;
}

Result<void> ValidateDeviceId(std::string_view id) {
  if (id.size() != 64 || id.find_first_not_of("0123456789abcdef") != std::string_view::npos) {
    return Fail(ErrorCode::kInvalidArgument,
                "device ID '{}' is not 64 lowercase hexadecimal characters", id.substr(0, 80));
  }
  return Ok();
}

Result<AttestationEvidence> AttestationEvidenceFromJson(const Json& json, std::string_view path) {
  ObjectReader r(json, path);
  MOAT_TRY(r.status());
  AttestationEvidence e;
  MOAT_ASSIGN_OR_RETURN(e.device_id, r.RequiredString("device_id", 64));
  if (auto v = ValidateDeviceId(e.device_id); !v) {
    return Fail(v.error().WithContext(JsonPathJoin(path, "device_id")));
  }
  MOAT_ASSIGN_OR_RETURN(std::string nonce, r.RequiredString("nonce", 64));
  auto nonce_bytes = Base64Decode(nonce, Base64Alphabet::kUrl, Base64Padding::kWithout);
  if (!nonce_bytes || nonce_bytes->size() != kNonceBytes) {
    return Fail(ErrorCode::kInvalidArgument, "{}.nonce: not {} bytes of unpadded base64url", path,
                kNonceBytes);
  }
  e.nonce = std::move(*nonce_bytes);
  if (!json.contains("log")) {
    return Fail(ErrorCode::kInvalidArgument, "{}: missing required field 'log'", path);
  }
  MOAT_ASSIGN_OR_RETURN(e.log, MeasurementLogFromJson(json["log"], JsonPathJoin(path, "log")));
  r.MarkSeen("log");
  MOAT_ASSIGN_OR_RETURN(e.os_version, r.RequiredString("os_version", kMaxNameBytes));
  MOAT_ASSIGN_OR_RETURN(std::string format, r.RequiredString("format", 16));
  if (format == "signature") {
    e.format = EvidenceFormat::kSignature;
  } else if (format == "tpm2-quote") {
    e.format = EvidenceFormat::kTpm2Quote;
  } else {
    return Fail(ErrorCode::kInvalidArgument,
                "{}.format: unknown evidence format '{}' (signature or tpm2-quote)", path,
                format.substr(0, 32));
  }
  MOAT_ASSIGN_OR_RETURN(std::string sig, r.RequiredString("signature", kMaxSignatureBytes * 2));
  auto sig_bytes = Base64Decode(sig, Base64Alphabet::kUrl, Base64Padding::kWithout);
  if (!sig_bytes || sig_bytes->empty() || sig_bytes->size() > kMaxSignatureBytes) {
    return Fail(ErrorCode::kInvalidArgument, "{}.signature: not unpadded base64url of 1..{} bytes",
                path, kMaxSignatureBytes);
  }
  e.signature = std::move(*sig_bytes);
  if (json.contains("tpm2_quote")) {
    r.MarkSeen("tpm2_quote");
    MOAT_ASSIGN_OR_RETURN(e.tpm2_quote,
                          Tpm2QuoteFromJson(json["tpm2_quote"], JsonPathJoin(path, "tpm2_quote")));
  }
  if ((e.format == EvidenceFormat::kTpm2Quote) != e.tpm2_quote.has_value()) {
    return Fail(ErrorCode::kInvalidArgument,
                "{}: 'tpm2_quote' is required with format tpm2-quote and only then", path);
  }
  MOAT_TRY(r.NoOtherFields());
  return e;
}

}  // namespace moat::formats
