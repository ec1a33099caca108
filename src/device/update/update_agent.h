// The update agent: one check runs the TUF client workflow against the device group's
// repository, installs every app image whose target differs from what is installed (through
// AppStore, after the image's signature is checked against the tenant's image-signing keys that
// the verified targets list), and reports the installed state. Offline bundles go through the
// same code with the bundle's files as the repository. docs/moatd.md, "Updates", describes it.
//
// Trust (docs/formats/tuf.md, "Bootstrapping trust"): the trusted metadata of a group lives in
// <state>/update/tuf/<group-id>/. A device with no trusted root for its current group fetches
// that group's 1.root.json over the authenticated channel and trusts it (trust on enrolment);
// when the group changes, the other groups' trust directories are deleted and the new group
// starts from its 1.root.json. A bundle never bootstraps: its root must chain from the trusted
// root of the group the device last saw online.
//
// Policy:
// - Update window (UpdateAgentOptions::window, UTC): outside it a check still refreshes the
//   metadata but installs nothing (result "deferred"); an on-demand check may ignore it.
// - Deferral: an app whose manifest has SoftwareUpdateDeferral may ask (RequestDeferral) to
//   defer its own update; a given image is deferred for at most max_deferral after the device
//   first saw it, whatever the app asks.
// - Crash loop: HandleCrashLoop() rolls an app back to its previous image when its current image
//   was installed less than rollback_window ago, marks the abandoned image bad (it is not
//   installed again until a targets version newer than the one in force at the rollback) and
//   reports "rolled-back".
//
// Thread-safety: every public method takes the agent's lock; checks are serialised.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "core/json.h"
#include "device/update/app_store.h"
#include "device/update/tuf_client.h"
#include "formats/guid.h"

namespace moat::device::update {

// The service side of an update check (the agent implements it over HTTPS with the device's
// client or update certificate; tests with a fake).
class UpdateTransport {
 public:
  virtual ~UpdateTransport() = default;
  // The device group id from GET /device/v1/whoami; nullopt when the device is in no group.
  virtual Result<std::optional<std::string>> DeviceGroup() = 0;
  // GET /device/v1/repo/<group>/<path>, with the Fetcher contract of tuf_client.h (kNotFound
  // for a 404, kLimitExceeded past max_bytes).
  virtual Result<std::string> Fetch(std::string_view group, std::string_view path,
                                    size_t max_bytes) = 0;
  // POST /device/v1/status with `body`.
  virtual Result<void> PostStatus(std::string_view body) = 0;
};

// An update window: installs happen only when the UTC time of day is in [start, end) (wrapping
// past midnight when end < start). Minutes after midnight.
struct UpdateWindow {
  int start_minute = 0;
  int end_minute = 0;
  bool Contains(SystemTime t) const;
  bool operator==(const UpdateWindow&) const = default;
};
// "HH:MM-HH:MM" (UTC); kInvalidArgument otherwise or when start == end.
Result<UpdateWindow> ParseUpdateWindow(std::string_view text);

struct UpdateAgentOptions {
  std::optional<UpdateWindow> window;  // none: any time
  std::chrono::seconds max_deferral{std::chrono::hours(24)};
  std::chrono::seconds rollback_window{std::chrono::hours(1)};
  std::string os_name = "linux";
  std::string os_version = "unknown";
  TufClientOptions tuf;
};

struct UpdateHooks {
  // An app's current image changed (installed or rolled back): run that version now. An error is
  // reported in the check's result (the image stays installed).
  std::function<Result<void>(const InstalledApp&)> on_app_changed;
  // Stops `component`'s app before a rollback deletes the image it runs from (may be empty).
  std::function<void(const formats::Guid& component)> stop_app;
  // Component IDs of the apps running now (for the status report).
  std::function<std::vector<formats::Guid>()> running;
  // Before replacing an installed app whose manifest has SystemEventNotifications (and which has
  // no deferral in force): tells it that its update is pending, to be applied at `deadline`, and
  // returns the deferral it asked for (0: go ahead; moatd: Supervisor::NotifyUpdatePending). The
  // agent honours a deferral only for an app with SoftwareUpdateDeferral, bounded by
  // max_deferral from when the device first saw the image. May block for the app's answer.
  std::function<std::chrono::seconds(const formats::Guid& component, SystemTime deadline)>
      update_pending;
};

// What one check, bundle or rollback did.
struct UpdateOutcome {
  std::string result = "none";  // "ok", "failed", "rolled-back", "deferred", "none"
  SystemTime at{};
  std::string detail;
  std::optional<int64_t> targets_version;
  std::vector<std::string> installed;  // "<name> <version> (<component>)"
  bool reported = false;               // POST /device/v1/status succeeded
  Json ToJson() const;
};

class UpdateAgent {
 public:
  // `transport` may be null (no service: bundles only). `store` and `transport` are borrowed.
  static Result<std::unique_ptr<UpdateAgent>> Open(std::filesystem::path state_dir, AppStore& store,
                                                   UpdateTransport* transport, UpdateHooks hooks,
                                                   const Clock& clock, UpdateAgentOptions options);

  // One online check (see the file comment); then reports the installed state.
  UpdateOutcome Check(bool ignore_window);
  // Installs an offline bundle (formats/update_bundle.h) with the same checks.
  UpdateOutcome ApplyBundle(std::span<const uint8_t> bundle, bool ignore_window);
  // The supervisor saw `component` crash-loop.
  UpdateOutcome HandleCrashLoop(const formats::Guid& component);
  // An app asks to defer its pending update by `duration`. kPermissionDenied unless its manifest
  // has SoftwareUpdateDeferral; kNotFound for an unknown app. Returns the time granted.
  Result<SystemTime> RequestDeferral(const formats::Guid& component, std::chrono::seconds duration);

  // The last outcome, the group, bad images (for moatctl status).
  Json Status() const;
  // The body of POST /device/v1/status.
  Json ReportBody() const;

 private:
  struct BadImage {
    std::string component_id;
    int64_t targets_version = 0;
    std::string reason;
  };
  UpdateAgent(std::filesystem::path dir, AppStore& store, UpdateTransport* transport,
              UpdateHooks hooks, const Clock& clock, UpdateAgentOptions options)
      : dir_(std::move(dir)),
        store_(store),
        transport_(transport),
        hooks_(std::move(hooks)),
        clock_(clock),
        options_(std::move(options)) {}
  Result<void> LoadState();
  Result<void> SaveState();
  Result<void> SwitchGroup(const std::string& group);
  // The workflow over a repository; `bootstrap` allows fetching 1.root.json.
  UpdateOutcome Run(Fetcher fetcher, const std::string& group, bool bootstrap, bool ignore_window);
  Result<void> RunInto(UpdateOutcome& out, Fetcher fetcher, const std::string& group,
                       bool bootstrap, bool ignore_window);
  UpdateOutcome Finish(UpdateOutcome out);
  Json ReportBodyLocked() const;

  const std::filesystem::path dir_;  // <state>/update
  AppStore& store_;
  UpdateTransport* transport_;
  UpdateHooks hooks_;
  const Clock& clock_;
  const UpdateAgentOptions options_;

  mutable std::mutex mu_;
  std::string group_;  // the group last seen online; "" when none
  int64_t targets_version_ = 0;
  std::map<std::string, BadImage> bad_;              // by image id
  std::map<std::string, SystemTime> first_offered_;  // pending image id -> first seen
  std::map<formats::Guid, SystemTime> deferrals_;    // component -> deferred until
  UpdateOutcome last_;
  std::string saved_essence_;  // state.json as last written, without the outcome's time
};

}  // namespace moat::device::update
