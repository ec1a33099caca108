// moatd's core: the device's identity in its key store, its measurements, the attestation loop
// that keeps its certificates fresh, the installed apps run by the supervisor (app_runner.h), and
// the update loop (device/update/update_agent.h); moatctl talks to it over the control socket
// (control.h). docs/moatd.md describes the behaviour and the state directory.
//
// Thread-safety: Start/Stop from one thread; Status() and AttestNow() from any.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"
#include "device/agent/app_runner.h"
#include "device/agent/attestor.h"
#include "device/agent/config.h"
#include "device/agent/control.h"
#include "device/agent/device_auth.h"
#include "device/agent/measurements.h"
#include "device/agent/schedule.h"
#include "device/reporting/failure_queue.h"
#include "device/reporting/uploader.h"
#include "device/update/app_store.h"
#include "device/update/update_agent.h"
#include "formats/attestation.h"
#include "rot/key_store.h"

namespace moat::device::agent {

// Opens the key store the config names, creating the identity and TLS client keys on first
// use. Shared by `moatd run` and `moatd identity`.
Result<std::unique_ptr<rot::KeyStore>> OpenKeyStore(const Config& config);


// What the device measures at start: the OS image (config "os.image"; without one, the bytes
// of /etc/os-release, which identify a plain Linux install), extended into kMoatPcr.
Result<formats::MeasurementLog> MeasureOs(const Config& config);

class Agent {
 public:
  // Opens everything, measures, starts the control socket and the attestation loop (which
  // attests at once). The device keeps running offline: failures only reschedule.
  static Result<std::unique_ptr<Agent>> Start(const Config& config, const Clock& clock,
                                              Random& random);
  // Paths it adds to the state directory: failures/ (the failure queue, docs/failure-queue.md).
  ~Agent();  // Stop()
  void Stop();

  // For moatctl: identity, credentials, last attestation, next attempt.
  Json Status() const;
  Json Identity() const;
  void AttestNow();
  // Where the supervisor puts failure events; uploaded in batches by the agent.
  reporting::FailureQueue& failure_queue() { return *failures_; }

  // One update check now, on the caller's thread (moatctl update now).
  update::UpdateOutcome UpdateNow(bool ignore_window);
  // Installs an offline bundle file (moatctl update apply).
  update::UpdateOutcome ApplyBundle(const std::filesystem::path& path, bool ignore_window);

 private:
  Agent(const Config& config, const Clock& clock, Random& random);
  Random& random_;
  void Loop();
  void UploadLoop();
  void UpdateLoop();
  Result<void> StartApps();
  // Asks the service which tenant this device belongs to (whoami) and remembers it for the
  // apps' device authentication. Failures are logged; the next attestation retries.
  void LearnTenant();
  Result<void> RunApp(const update::InstalledApp& app);
  Result<void> SendReports(std::span<const formats::FailureEvent> events);
  Json HandleControl(const Json& request);
  // `moatctl app ...`: app-list, app-show {app, spec}, app-start/app-stop {app},
  // app-logs {app, stream: stdout|stderr, lines}.
  Json HandleAppControl(const std::string& command, const Json& request);

  const Config config_;
  const Clock& clock_;
  std::unique_ptr<rot::KeyStore> keys_;
  std::string device_id_;
  std::unique_ptr<Measurements> measurements_;  // this boot's log (measurements.h)
  std::unique_ptr<Attestor> attestor_;
  std::shared_ptr<DeviceCredentials> credentials_;  // lent to apps (device authentication)
  AttestationScheduler scheduler_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<reporting::FailureQueue> failures_;
  std::unique_ptr<reporting::Uploader> uploader_;  // used by upload_thread_ only
  std::thread upload_thread_;
  std::optional<update::AppStore> apps_;
  std::unique_ptr<update::UpdateTransport> transport_;
  std::unique_ptr<update::UpdateAgent> update_;
  std::unique_ptr<AppRunner> runner_;  // null when apps cannot run here (runner_error_ says why)
  std::string runner_error_;
  std::thread update_thread_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;                           // guarded by mu_
  bool attest_now_ = false;                         // guarded by mu_
  SystemTime next_attempt_{};                       // guarded by mu_
  std::optional<AttestationOutcome> last_outcome_;  // guarded by mu_
  std::string last_error_;                          // guarded by mu_
  std::optional<SystemTime> last_error_at_;         // guarded by mu_
  bool check_now_ = false;                          // guarded by mu_
  SystemTime next_check_{};                         // guarded by mu_
  int check_failures_ = 0;                          // guarded by mu_
  std::vector<formats::Guid> crash_loops_;          // guarded by mu_
  std::thread thread_;
};

}  // namespace moat::device::agent
