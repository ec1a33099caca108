// This boot's measurement log: what moatd extended into the Moat register (formats::kMoatPcr) of
// its key store, kept so that the log it sends with every attestation replays to the register the
// key store quotes, across moatd restarts (docs/moatd.md, "Measurements").
//
// What is measured, each before it runs, each once per boot (an entry equal in kind, name and
// digest to one already in the log is not extended again):
//   os   the OS image (MeasureOs in agent.h)
//   app  an installed app's current image: name = its component ID, version = its version,
//        digest = the image ID, SHA-256 of the signed package file, which is what the service
//        registers as the app's reference value when the image is uploaded (AppMeasurement).
//
// The run file. The log lives in `file` (by default <run_dir>/<instance>/measurements.json, on
// /run, which a reboot clears as it resets the registers), rewritten atomically BEFORE each
// extend:
//   {"format": "moat-measurements-1", "pcr": 13, "base": "<64 hex>", "log": [<entries>]}
// `base` is the register's value when the log began: 32 zero bytes for a log begun at reset.
// Writing first means a crash between the two leaves a log one entry ahead of the register,
// never a register ahead of its log; Open drops entries that were never extended.
//
// Open, at moatd's start, reads the register and the run file and decides (MeasurementStart):
//   kFresh       the register is at its reset value (never extended this boot; the software and
//                PKCS#11 stores' registers are in memory, so this is every start there): a new
//                log. A saved log with entries is discarded with a warning (the TPM was reset
//                but /run was not, e.g. swtpm restarted).
//   kResumed     the saved log, replayed from its base, gives the register's value (or a prefix
//                of it does: the entries after it were written but never extended, and are
//                dropped with a warning): reused; only what is new is extended. Without a saved
//                log that replays, the measurements moatd is about to make (`expected`: the OS,
//                then the installed apps), or a prefix of them, replayed from zero may give the
//                register's value (the run file was lost, the inputs are unchanged): that log is
//                adopted. Either way the hash chain proves the log; nothing is assumed.
//   kUnverifiable the register holds measurements neither a saved log nor `expected` accounts
//                for (something else extended it, or the run file is another TPM's). moatd does not invent history: it starts a
//                log whose base is the current value, extends and logs from there, and warns
//                that attestation cannot pass (the service replays from zero) until the device
//                reboots or the TPM is reset. A restart in this state resumes that log.
//
// Thread-safety: all methods may be called from any thread. WithLog holds off Record while its
// function runs, so that no extend happens between reading the log and quoting the registers;
// Log and Status never wait for it.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "device/agent/config.h"
#include "device/update/app_store.h"
#include "formats/attestation.h"
#include "rot/key_store.h"

namespace moat::device::agent {

inline constexpr size_t kMaxMeasurementFileBytes = 256 * 1024;

enum class MeasurementStart { kFresh, kResumed, kUnverifiable };
std::string_view MeasurementStartName(MeasurementStart start);  // "fresh", "resumed", ...

// The run file for `config`: <supervisor.run_dir>/<instance ID>/measurements.json (instance.h).
std::filesystem::path MeasurementFile(const Config& config);

// The measurement of an installed app's image (see the file comment); kInvalidArgument if its
// image ID is not 64 hex digits.
Result<formats::Measurement> AppMeasurement(const update::InstalledImage& image);

// What moatd measures at start, in order: `os`'s entries, then each app's current image (apps
// whose image ID is malformed are left out: they are not run).
std::vector<formats::Measurement> StartMeasurements(const formats::MeasurementLog& os,
                                                    std::span<const update::InstalledApp> apps);

class Measurements {
 public:
  // Reads the register and `file` and decides how this boot's log continues (file comment).
  // An empty `file` keeps the log in memory only (moatd falls back to that, with a warning, when
  // the run directory is not writable, e.g. not root: restarts then cannot resume).
  // Errors: reading the registers fails; `file` exists but cannot be read, or cannot be written
  // (a file that does not parse is treated as absent, with a warning).
  static Result<std::unique_ptr<Measurements>> Open(
      rot::KeyStore& keys, std::filesystem::path file,
      std::span<const formats::Measurement> expected = {});

  // Extends `m` (pcr must be kMoatPcr) unless the log already has an entry with its kind, name
  // and digest. Returns whether it extended. On error (the run file cannot be written, the
  // extend fails) the log is unchanged and the caller must not run what was measured.
  Result<bool> Record(const formats::Measurement& m);
  // Record(AppMeasurement(image)).
  Result<bool> RecordApp(const update::InstalledImage& image);

  // A copy of this boot's log.
  formats::MeasurementLog Log() const;

  // Runs f(log) with this boot's log while no Record can happen (f may take long: an
  // attestation round; Record waits for it).
  template <typename F>
  auto WithLog(F&& f) const {
    std::lock_guard hold(extend_mu_);
    const formats::MeasurementLog log = Log();
    return f(log);
  }

  MeasurementStart start() const { return start_; }
  // One sentence on how this log began (what Open decided and why).
  const std::string& start_detail() const { return start_detail_; }
  // For moatctl status: {"start", "detail", "file", "replays_from_reset", "log"}.
  Json Status() const;

 private:
  Measurements(rot::KeyStore& keys, std::filesystem::path file)
      : keys_(keys), file_(std::move(file)) {}
  Result<void> Save(const formats::MeasurementLog& log) const;

  rot::KeyStore& keys_;
  const std::filesystem::path file_;
  crypto::Sha256Digest base_{};
  MeasurementStart start_ = MeasurementStart::kFresh;
  std::string start_detail_;
  mutable std::mutex extend_mu_;  // held by Record and WithLog
  mutable std::mutex mu_;
  formats::MeasurementLog log_;  // guarded by mu_
};

}  // namespace moat::device::agent
