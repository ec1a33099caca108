#include "device/agent/measurements.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "core/encoding.h"
#include "core/file.h"
#include "core/log.h"
#include "device/agent/instance.h"
#include "formats/json_reader.h"

namespace moat::device::agent {
namespace {

constexpr std::string_view kFileFormat = "moat-measurements-1";

struct SavedLog {
  crypto::Sha256Digest base{};
  formats::MeasurementLog log;
};

Result<crypto::Sha256Digest> DigestFromHex(std::string_view hex, std::string_view what) {
  auto bytes = HexDecode(hex);
  if (!bytes || bytes->size() != 32) {
    return Fail(ErrorCode::kInvalidArgument, "{}: not 64 hexadecimal characters", what);
  }
  crypto::Sha256Digest d{};
  std::copy(bytes->begin(), bytes->end(), d.begin());
  return d;
}

Result<SavedLog> ParseSaved(std::string_view text, const std::filesystem::path& file) {
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(text, file.string()));
  formats::ObjectReader r(j, "measurements");
  MOAT_TRY(r.status());
  MOAT_ASSIGN_OR_RETURN(std::string format, r.RequiredString("format", 64));
  if (format != kFileFormat) {
    return Fail(ErrorCode::kInvalidArgument, "measurements.format: '{}', expected '{}'",
                format.substr(0, 64), kFileFormat);
  }
  MOAT_ASSIGN_OR_RETURN(int64_t pcr, r.RequiredInt("pcr", 0, formats::kMaxPcr));
  if (pcr != formats::kMoatPcr) {
    return Fail(ErrorCode::kInvalidArgument, "measurements.pcr: {}, expected {}", pcr,
                formats::kMoatPcr);
  }
  SavedLog saved;
  MOAT_ASSIGN_OR_RETURN(std::string base, r.RequiredString("base", 64));
  MOAT_ASSIGN_OR_RETURN(saved.base, DigestFromHex(base, "measurements.base"));
  if (!j.contains("log")) return Fail(ErrorCode::kInvalidArgument, "measurements: no 'log'");
  MOAT_ASSIGN_OR_RETURN(saved.log, formats::MeasurementLogFromJson(j["log"], "measurements.log"));
  r.MarkSeen("log");
  MOAT_TRY(r.NoOtherFields());
  for (size_t i = 0; i < saved.log.entries.size(); ++i) {
    if (saved.log.entries[i].pcr != formats::kMoatPcr) {
      return Fail(ErrorCode::kInvalidArgument, "measurements.log[{}]: PCR {}, expected {}", i,
                  saved.log.entries[i].pcr, formats::kMoatPcr);
    }
  }
  return saved;
}

bool SameMeasurement(const formats::Measurement& a, const formats::Measurement& b) {
  return a.pcr == b.pcr && a.kind == b.kind && a.name == b.name && a.digest == b.digest;
}

}  // namespace

std::string_view MeasurementStartName(MeasurementStart start) {
  switch (start) {
    case MeasurementStart::kFresh:
      return "fresh";
    case MeasurementStart::kResumed:
      return "resumed";
    case MeasurementStart::kUnverifiable:
      return "unverifiable";
  }
  return "fresh";
}

std::filesystem::path MeasurementFile(const Config& config) {
  const std::string instance = config.supervisor.instance_id.empty()
                                   ? DefaultInstanceId(config.state_dir)
                                   : config.supervisor.instance_id;
  return config.supervisor.run_dir / instance / "measurements.json";
}

Result<formats::Measurement> AppMeasurement(const update::InstalledImage& image) {
  formats::Measurement m{.pcr = formats::kMoatPcr,
                         .kind = formats::MeasurementKind::kApp,
                         .name = image.component_id.ToString(),
                         .version = image.version};
  // The app store names each image by the SHA-256 of its package file (app_store.h), computed
  // from the bytes it installed; the package itself is not kept.
  MOAT_ASSIGN_OR_RETURN(
      m.digest, DigestFromHex(image.image_id,
                              fmt::format("app '{}' {}: image ID", image.name, image.version)));
  return m;
}

std::vector<formats::Measurement> StartMeasurements(const formats::MeasurementLog& os,
                                                    std::span<const update::InstalledApp> apps) {
  std::vector<formats::Measurement> out = os.entries;
  for (const auto& app : apps) {
    if (auto m = AppMeasurement(app.current)) out.push_back(std::move(*m));
  }
  return out;
}

Result<std::unique_ptr<Measurements>> Measurements::Open(
    rot::KeyStore& keys, std::filesystem::path file,
    std::span<const formats::Measurement> expected) {
  auto out = std::unique_ptr<Measurements>(new Measurements(keys, std::move(file)));
  const std::string where = out->file_.string();
  MOAT_ASSIGN_OR_RETURN(auto registers, keys.ReadRegisters());
  const crypto::Sha256Digest zero{};
  const auto it = registers.find(formats::kMoatPcr);
  const crypto::Sha256Digest value = it == registers.end() ? zero : it->second;

  std::optional<SavedLog> saved;
  auto text = out->file_.empty() ? Result<std::string>(Fail(ErrorCode::kNotFound, "no run file"))
                                 : ReadFile(out->file_, kMaxMeasurementFileBytes);
  if (text) {
    auto parsed = ParseSaved(*text, out->file_);
    if (parsed) {
      saved = std::move(*parsed);
    } else {
      log::Warn("ignoring the saved measurement log: {}", parsed.error().message());
    }
  } else if (text.error().code() != ErrorCode::kNotFound) {
    return Fail(text.error().WithContext("reading the saved measurement log"));
  }

  if (value == zero) {
    out->start_ = MeasurementStart::kFresh;
    out->start_detail_ =
        fmt::format("PCR {} is at its reset value: a new measurement log", formats::kMoatPcr);
    if (saved && !saved->log.entries.empty()) {
      log::Warn(
          "the saved measurement log {} has {} entries but PCR {} is at its reset value (the "
          "TPM was reset without a reboot clearing the run directory?); discarding it",
          where, saved->log.entries.size(), formats::kMoatPcr);
      out->start_detail_ +=
          fmt::format(" (the saved log of {} entries was discarded)", saved->log.entries.size());
    }
    MOAT_TRY(out->Save(out->log_));
    return out;
  }

  if (saved) {
    // The longest prefix of the saved log that replays to the register: entries after it were
    // saved but never extended (a crash between the two).
    std::vector<crypto::Sha256Digest> replay{saved->base};
    for (const auto& m : saved->log.entries)
      replay.push_back(crypto::ExtendPcr(replay.back(), m.digest));
    for (size_t n = replay.size(); n-- > 0;) {
      if (replay[n] != value) continue;
      const size_t dropped = saved->log.entries.size() - n;
      saved->log.entries.resize(n);
      out->base_ = saved->base;
      out->log_ = std::move(saved->log);
      const bool from_reset = out->base_ == zero;
      out->start_ = from_reset ? MeasurementStart::kResumed : MeasurementStart::kUnverifiable;
      out->start_detail_ = fmt::format(
          "the saved log of {} entries replays to PCR {}{}: reused", n, formats::kMoatPcr,
          from_reset ? "" : " from a base that is not its reset value");
      if (dropped > 0) {
        log::Warn(
            "the last {} entries of the saved measurement log were never extended into "
            "PCR {} (moatd stopped between saving and extending); dropped",
            dropped, formats::kMoatPcr);
        out->start_detail_ += fmt::format(" ({} entries never extended were dropped)", dropped);
        MOAT_TRY(out->Save(out->log_));
      }
      if (!from_reset) {
        log::Warn(
            "PCR {} holds measurements this boot's log does not account for; attestation "
            "cannot pass until the device reboots or its TPM is reset",
            formats::kMoatPcr);
      }
      return out;
    }
  }

  // The run file is gone (or stale) but the inputs may be what they were: what this start
  // measures, replayed from zero, may be exactly what the register holds. The hash chain proves
  // it; a partial match (a prefix) too.
  {
    crypto::Sha256Digest v = zero;
    std::optional<size_t> match;
    for (size_t i = 0; i < expected.size() && expected[i].pcr == formats::kMoatPcr; ++i) {
      v = crypto::ExtendPcr(v, expected[i].digest);
      if (v == value) match = i + 1;
    }
    if (match) {
      out->start_ = MeasurementStart::kResumed;
      out->log_.entries.assign(expected.begin(), expected.begin() + static_cast<ptrdiff_t>(*match));
      out->start_detail_ = fmt::format(
          "no saved log replays to PCR {} ({}), but the first {} of this start's measurements do: "
          "rebuilt the log from them",
          formats::kMoatPcr, saved ? "the saved log does not" : "none saved", *match);
      log::Warn("{}", out->start_detail_);
      MOAT_TRY(out->Save(out->log_));
      return out;
    }
  }

  // SECURITY: the register holds measurements nothing here accounts for. Inventing a log that
  // starts from zero would be a lie the service would catch anyway; say what happened instead.
  out->start_ = MeasurementStart::kUnverifiable;
  out->base_ = value;
  out->start_detail_ = fmt::format(
      "PCR {} holds {} that moatd has no record of ({}); logging from its current value, so "
      "attestation cannot pass until the device reboots or its TPM is reset",
      formats::kMoatPcr, HexEncode(value).substr(0, 16),
      saved ? "the saved log does not replay to it" : "no saved log");
  log::Warn("{}", out->start_detail_);
  MOAT_TRY(out->Save(out->log_));
  return out;
}

Result<void> Measurements::Save(const formats::MeasurementLog& log) const {
  if (file_.empty()) return Ok();
  MOAT_TRY(MakeDirectories(file_.parent_path(), 0700));
  Json j = {{"format", kFileFormat},
            {"pcr", formats::kMoatPcr},
            {"base", HexEncode(base_)},
            {"log", formats::ToJson(log)}};
  return AtomicWriteFile(file_, j.dump(2) + "\n", {.mode = 0600});
}

Result<bool> Measurements::Record(const formats::Measurement& m) {
  if (m.pcr != formats::kMoatPcr) {
    return Fail(ErrorCode::kInvalidArgument, "moatd measures into PCR {} only, not {}",
                formats::kMoatPcr, m.pcr);
  }
  std::lock_guard hold(extend_mu_);  // only Record changes log_, so it may read it unlocked
  if (std::any_of(log_.entries.begin(), log_.entries.end(),
                  [&](const formats::Measurement& e) { return SameMeasurement(e, m); })) {
    return false;
  }
  if (log_.entries.size() >= formats::kMaxMeasurements) {
    return Fail(ErrorCode::kLimitExceeded, "this boot's measurement log is full ({} entries)",
                formats::kMaxMeasurements);
  }
  formats::MeasurementLog next = log_;
  next.entries.push_back(m);
  MOAT_TRY(Save(next));  // before the extend: see the file comment
  if (auto r = keys_.Extend(m.pcr, m.digest); !r) {
    // The command may have reached the TPM even though its answer did not reach us (a transport
    // timeout): ask the register which log it holds, rather than assume. The run file stays one
    // entry ahead unless the register proves the extend did not happen (Open drops such an
    // entry anyway).
    std::optional<crypto::Sha256Digest> held;
    if (auto registers = keys_.ReadRegisters(); registers) {
      auto i = registers->find(m.pcr);
      held = i != registers->end() ? i->second : crypto::Sha256Digest{};  // absent: reset value
    }
    crypto::Sha256Digest before = base_;
    for (const auto& e : log_.entries) before = crypto::ExtendPcr(before, e.digest);
    const crypto::Sha256Digest after = crypto::ExtendPcr(before, m.digest);
    if (held == after) {
      log::Warn(
          "extending PCR {} reported an error ({}), but the register holds the extended "
          "value: the measurement is recorded",
          m.pcr, r.error().message());
    } else {
      if (held == before) {
        if (auto undo = Save(log_); !undo) {
          log::Warn("restoring the measurement log after a failed extend: {}",
                    undo.error().message());
        }
      } else {
        log::Warn(
            "extending PCR {} failed and the register could not be read or holds neither "
            "the old nor the new value; the next start will say whether the log replays",
            m.pcr);
      }
      return Fail(r.error().WithContext(fmt::format("extending PCR {}", m.pcr)));
    }
  }
  {
    std::lock_guard lock(mu_);
    log_ = std::move(next);
  }
  log::Info("measured {} '{}' {}: sha256 {}", formats::MeasurementKindName(m.kind), m.name,
            m.version, HexEncode(m.digest));
  return true;
}

Result<bool> Measurements::RecordApp(const update::InstalledImage& image) {
  MOAT_ASSIGN_OR_RETURN(formats::Measurement m, AppMeasurement(image));
  return Record(m);
}

formats::MeasurementLog Measurements::Log() const {
  std::lock_guard lock(mu_);
  return log_;
}

Json Measurements::Status() const {
  std::lock_guard lock(mu_);
  return {{"start", MeasurementStartName(start_)},
          {"detail", start_detail_},
          {"file", file_.string()},
          {"replays_from_reset", base_ == crypto::Sha256Digest{}},
          {"log", formats::ToJson(log_)}};
}

}  // namespace moat::device::agent
