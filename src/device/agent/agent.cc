#include "device/agent/agent.h"

#include <fcntl.h>
#include <unistd.h>

#include "core/encoding.h"
#include "core/file.h"
#include "core/log.h"
#include "core/unique_fd.h"
#include "crypto/digest.h"
#include "device/agent/update_transport.h"
#include "rot/open_key_store.h"
#include "rot/tpm2_key_store.h"

namespace moat::device::agent {
namespace {

Json ChainJson(const std::optional<CertificateChain>& c, SystemTime now) {
  if (!c) return nullptr;
  const auto& leaf = c->leaf();
  return {{"serial", leaf.SerialHex()},
          {"issuer", leaf.Issuer()},
          {"not_before", FormatRfc3339(leaf.NotBefore())},
          {"not_after", FormatRfc3339(leaf.NotAfter())},
          {"valid_now", leaf.NotBefore() <= now && now < leaf.NotAfter()}};
}

}  // namespace

Result<std::unique_ptr<rot::KeyStore>> OpenKeyStore(const Config& config) {
  MOAT_TRY(MakeDirectories(config.state_dir, 0700));
  rot::KeyStoreConfig ks{.backend = config.key_store_backend,
                         .path = config.key_store_path,
                         .tpm2 = config.key_store_tpm2,
                         .pkcs11 = config.key_store_pkcs11};
  MOAT_ASSIGN_OR_RETURN(auto store, rot::OpenKeyStore(ks));
  MOAT_TRY(store->EnsureKey(rot::kIdentityKeyLabel));
  MOAT_TRY(store->EnsureKey(rot::kTlsClientKeyLabel));
  return store;
}

Result<formats::MeasurementLog> MeasureOs(const Config& config) {
  const std::filesystem::path source =
      config.os_image.empty() ? std::filesystem::path("/etc/os-release") : config.os_image;
  auto digest = crypto::Sha256OfFile(source);
  if (!digest) {
    return Fail(digest.error().WithContext(config.os_image.empty()
                                               ? "measuring the OS (no os.image configured)"
                                               : "measuring the OS image"));
  }
  formats::MeasurementLog log;
  log.entries.push_back({.pcr = formats::kMoatPcr,
                         .kind = formats::MeasurementKind::kOs,
                         .name = config.os_name,
                         .version = config.os_version,
                         .digest = *digest});
  return log;
}

Agent::Agent(const Config& config, const Clock& clock, Random& random)
    : random_(random), config_(config), clock_(clock), scheduler_(config.attestation, random) {}

Result<std::unique_ptr<Agent>> Agent::Start(const Config& config, const Clock& clock,
                                            Random& random) {
  auto agent = std::unique_ptr<Agent>(new Agent(config, clock, random));
  MOAT_ASSIGN_OR_RETURN(agent->keys_, OpenKeyStore(agent->config_));
  MOAT_ASSIGN_OR_RETURN(agent->device_id_, DeviceId(*agent->keys_));
  log::Info("device ID {} (key store: {})", agent->device_id_, agent->keys_->backend());

  // This boot's log continues across restarts (measurements.h); only what is new is extended.
  MOAT_ASSIGN_OR_RETURN(formats::MeasurementLog os, MeasureOs(agent->config_));
  std::vector<update::InstalledApp> installed;
  {
    MOAT_ASSIGN_OR_RETURN(auto store, update::AppStore::Open(StateLayout(config.state_dir).apps(),
                                                             clock));
    MOAT_ASSIGN_OR_RETURN(installed, store.List());
  }
  const auto expected = StartMeasurements(os, installed);
  auto measurements =
      Measurements::Open(*agent->keys_, MeasurementFile(agent->config_), expected);
  if (!measurements) {
    log::Warn("the measurement log is kept in memory only ({}); on a TPM, a moatd restart "
              "without a reboot then cannot resume it and attestation fails until the next boot",
              measurements.error().message());
    measurements = Measurements::Open(*agent->keys_, {}, expected);  // fails only on registers
    if (!measurements) return Fail(measurements.error().WithContext("reading the registers"));
  }
  agent->measurements_ = std::move(*measurements);
  log::Info("measurement log: {}", agent->measurements_->start_detail());
  for (const auto& m : os.entries) MOAT_TRY(agent->measurements_->Record(m));
  MOAT_ASSIGN_OR_RETURN(std::string root_pem,
                        ReadFile(agent->config_.service_root_certificate, 64 * 1024));
  auto root = crypto::Certificate::FromPem(root_pem);
  if (!root) {
    return Fail(root.error().WithContext(agent->config_.service_root_certificate.string()));
  }
  agent->attestor_ =
      std::make_unique<Attestor>(agent->config_, *agent->keys_, clock, std::move(*root));
  agent->credentials_ = std::make_shared<DeviceCredentials>(
      *agent->attestor_, *agent->keys_, clock, agent->config_.state_dir / "tenant.json");
  if (auto loaded = agent->credentials_->Load(); !loaded) {
    log::Warn("the remembered tenant is unusable ({}); asking the service again",
              loaded.error().message());
  }
  Agent* raw = agent.get();
  MOAT_ASSIGN_OR_RETURN(agent->control_,
                        ControlServer::Start(agent->config_.control_socket, [raw](const Json& r) {
                          return raw->HandleControl(r);
                        }));
  MOAT_ASSIGN_OR_RETURN(
      agent->failures_,
      reporting::FailureQueue::Open(agent->config_.state_dir / "failures", clock, random));
  agent->uploader_ = std::make_unique<reporting::Uploader>(
      *agent->failures_,
      [raw](std::span<const formats::FailureEvent> events) { return raw->SendReports(events); },
      clock, random);
  MOAT_TRY(agent->StartApps());
  agent->next_attempt_ = clock.Now();
  agent->next_check_ = clock.Now();
  agent->thread_ = std::thread([raw] { raw->Loop(); });
  agent->upload_thread_ = std::thread([raw] { raw->UploadLoop(); });
  if (agent->config_.update.enabled) {
    agent->update_thread_ = std::thread([raw] { raw->UpdateLoop(); });
  }
  return agent;
}

Result<void> Agent::StartApps() {
  const StateLayout layout(config_.state_dir);
  MOAT_ASSIGN_OR_RETURN(auto store, update::AppStore::Open(layout.apps(), clock_));
  apps_.emplace(std::move(store));
  MOAT_ASSIGN_OR_RETURN(std::vector<update::InstalledApp> installed, apps_->List());
  auto runner = AppRunner::Create(config_, {.on_failure =
                                                [this](const formats::FailureEvent& e) {
                                                  auto r = failures_->Push(e);
                                                  if (!r)
                                                    log::Warn("failure event not queued: {}",
                                                              r.error().message());
                                                  wake_.notify_all();
                                                },
                                            .on_crash_loop =
                                                [this](const formats::Guid& component) {
                                                  // Handled on the update thread: the supervisor's
                                                  // callback must not wait.
                                                  std::lock_guard lock(mu_);
                                                  crash_loops_.push_back(component);
                                                  wake_.notify_all();
                                                },
                                            .device_authority = credentials_});
  if (runner) {
    runner_ = std::move(*runner);
  } else {
    runner_error_ = runner.error().message();
    if (!installed.empty()) {
      return Fail(ErrorCode::kFailedPrecondition, "{} app(s) installed but they cannot run: {}",
                  installed.size(), runner_error_);
    }
    log::Warn(
        "apps cannot run on this device: {} (none installed; updates will fail to start "
        "them)",
        runner_error_);
  }
  for (const auto& app : installed) {
    // Measured before it runs; an app that cannot be measured does not run.
    if (auto m = measurements_->RecordApp(app.current); !m) {
      log::Error("app '{}' {} not started: {}", app.current.name, app.current.version,
                 m.error().message());
      continue;
    }
    if (auto r = runner_->Run(app); !r) {
      log::Error("app '{}' {} not started: {}", app.current.name, app.current.version,
                 r.error().message());
    }
  }
  transport_ = std::make_unique<HttpsUpdateTransport>(*attestor_);
  update::UpdateAgentOptions options;
  if (!config_.update.window.empty()) {
    MOAT_ASSIGN_OR_RETURN(options.window, update::ParseUpdateWindow(config_.update.window));
  }
  options.max_deferral = config_.update.max_deferral;
  options.rollback_window = config_.update.rollback_window;
  options.os_name = config_.os_name;
  options.os_version = config_.os_version;
  update::UpdateHooks hooks;
  hooks.on_app_changed = [this](const update::InstalledApp& app) { return RunApp(app); };
  hooks.stop_app = [this](const formats::Guid& component) {
    if (runner_) runner_->Stop(component);
  };
  hooks.running = [this] { return runner_ ? runner_->Running() : std::vector<formats::Guid>(); };
  // The app-facing half of update deferral (AppRunner::AskUpdateDeferral).
  hooks.update_pending = [this](const formats::Guid& component, SystemTime now) {
    return runner_ ? runner_->AskUpdateDeferral(component, now) : std::chrono::seconds(0);
  };
  MOAT_ASSIGN_OR_RETURN(update_,
                        update::UpdateAgent::Open(config_.state_dir, *apps_, transport_.get(),
                                                  std::move(hooks), clock_, std::move(options)));
  return Ok();
}

Result<void> Agent::RunApp(const update::InstalledApp& app) {
  if (!runner_) return Fail(ErrorCode::kFailedPrecondition, "{}", runner_error_);
  // Measured before it runs. A new measurement changes what the device would attest to, so
  // attest now: the client certificate then reflects the installed app (docs/moatd.md).
  MOAT_ASSIGN_OR_RETURN(bool extended, measurements_->RecordApp(app.current));
  if (extended) AttestNow();
  return runner_->Run(app);
}

update::UpdateOutcome Agent::UpdateNow(bool ignore_window) {
  update::UpdateOutcome out = update_->Check(ignore_window);
  std::lock_guard lock(mu_);
  if (out.result != "failed") {
    check_failures_ = 0;
  }
  return out;
}

update::UpdateOutcome Agent::ApplyBundle(const std::filesystem::path& path, bool ignore_window) {
  auto bytes = ReadFileBytes(path, size_t{1} << 30);
  if (!bytes) {
    update::UpdateOutcome out;
    out.result = "failed";
    out.at = clock_.Now();
    out.detail = fmt::format("reading the bundle: {}", bytes.error().message());
    return out;
  }
  return update_->ApplyBundle(*bytes, ignore_window);
}

void Agent::UpdateLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    while (!stopping_ && !check_now_ && crash_loops_.empty() && clock_.Now() < next_check_) {
      wake_.wait_for(lock, std::chrono::milliseconds(500));
    }
    if (stopping_) return;
    if (!crash_loops_.empty()) {
      const formats::Guid component = crash_loops_.front();
      crash_loops_.erase(crash_loops_.begin());
      lock.unlock();
      update_->HandleCrashLoop(component);
      lock.lock();
      continue;
    }
    check_now_ = false;
    lock.unlock();
    const update::UpdateOutcome out = update_->Check(/*ignore_window=*/false);
    lock.lock();
    const SystemTime now = clock_.Now();
    using std::chrono::milliseconds;
    if (out.result == "failed") {
      ++check_failures_;
      auto delay = std::chrono::duration_cast<milliseconds>(config_.update.retry_initial);
      const auto cap = std::chrono::duration_cast<milliseconds>(config_.update.retry_max);
      for (int i = 1; i < check_failures_ && delay < cap; ++i) delay *= 2;
      delay = std::min(delay, cap);
      const int64_t half = delay.count() / 2;
      next_check_ =
          now + milliseconds(half + static_cast<int64_t>(random_.Uniform(
                                        static_cast<uint64_t>(delay.count() - half + 1))));
    } else {
      check_failures_ = 0;
      const auto interval = std::chrono::duration_cast<milliseconds>(config_.update.interval);
      const auto spread =
          static_cast<int64_t>(static_cast<double>(interval.count()) * config_.update.jitter);
      const int64_t offset =
          spread > 0
              ? static_cast<int64_t>(random_.Uniform(static_cast<uint64_t>(2 * spread + 1))) -
                    spread
              : 0;
      next_check_ = now + interval + milliseconds(offset);
    }
    log::Info("next update check at {}", FormatRfc3339(next_check_));
  }
}

Agent::~Agent() { Stop(); }

void Agent::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (upload_thread_.joinable()) upload_thread_.join();
  if (update_thread_.joinable()) update_thread_.join();
  control_.reset();
  if (runner_) runner_->Shutdown();
}

Result<void> Agent::SendReports(std::span<const formats::FailureEvent> events) {
  // An update certificate is enough: a device that failed attestation still reports.
  MOAT_ASSIGN_OR_RETURN(auto client, attestor_->Connect(/*certified_only=*/true));
  MOAT_ASSIGN_OR_RETURN(
      net::HttpResponse r,
      client->Send("POST", "/device/v1/reports", formats::SerializeFailureEventBatch(events)));
  if (r.status != 200) {
    return Fail(r.status >= 500 ? ErrorCode::kUnavailable : ErrorCode::kInvalidArgument,
                "failure report upload: HTTP {}: {}", r.status, r.body.substr(0, 200));
  }
  return Ok();
}

void Agent::UploadLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::seconds(1));
    if (stopping_) return;
    const auto stats = failures_->Stats();
    if ((stats.events == 0 && stats.dropped == 0) || !uploader_->Due()) continue;
    lock.unlock();
    auto sent = uploader_->UploadOnce();
    if (!sent) {
      log::Warn("failure reports not uploaded: {}; retrying later", sent.error().message());
    } else if (*sent > 0) {
      log::Info("uploaded {} failure event(s)", *sent);
    }
    lock.lock();
  }
}

void Agent::AttestNow() {
  {
    std::lock_guard lock(mu_);
    attest_now_ = true;
  }
  wake_.notify_all();
}

void Agent::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    // Real-time waits in short steps, comparing with the (injectable) clock each time.
    while (!stopping_ && !attest_now_ && clock_.Now() < next_attempt_) {
      wake_.wait_for(lock, std::chrono::milliseconds(500));
    }
    if (stopping_) return;
    attest_now_ = false;
    lock.unlock();
    // No extend between the log read here and the registers quoted (Measurements::WithLog).
    auto outcome = measurements_->WithLog([&](const formats::MeasurementLog& log) {
      return attestor_->AttestOnce(log, config_.os_version);
    });
    if (outcome) LearnTenant();
    lock.lock();
    const SystemTime now = clock_.Now();
    if (outcome) {
      const CertificateChain& governing = outcome->client ? *outcome->client : outcome->update;
      next_attempt_ =
          scheduler_.AfterSuccess(now, governing.leaf().NotBefore(), governing.leaf().NotAfter());
      if (outcome->passed) {
        log::Info("attestation passed; client certificate valid until {}; next at {}",
                  FormatRfc3339(outcome->client->leaf().NotAfter()), FormatRfc3339(next_attempt_));
      } else {
        log::Warn("attestation FAILED ({}); update certificate only, valid until {}; next at {}",
                  outcome->failures.empty() ? "no reason given" : outcome->failures.front(),
                  FormatRfc3339(outcome->update.leaf().NotAfter()), FormatRfc3339(next_attempt_));
      }
      last_outcome_ = std::move(*outcome);
      last_error_.clear();
      last_error_at_.reset();
    } else {
      next_attempt_ = scheduler_.AfterFailure(now);
      last_error_ = outcome.error().message();
      last_error_at_ = now;
      log::Warn("attestation did not complete: {}; retrying at {} (attempt {})", last_error_,
                FormatRfc3339(next_attempt_), scheduler_.consecutive_failures());
    }
  }
}

void Agent::LearnTenant() {
  auto tenant = [&]() -> Result<formats::Guid> {
    MOAT_ASSIGN_OR_RETURN(auto client, attestor_->Connect(/*certified_only=*/true, 64 << 10));
    MOAT_ASSIGN_OR_RETURN(net::HttpResponse r, client->Send("GET", "/device/v1/whoami"));
    if (r.status != 200) {
      return Fail(ErrorCode::kUnavailable, "whoami: HTTP {}: {}", r.status, r.body.substr(0, 200));
    }
    return TenantFromWhoAmI(r.body);
  }();
  if (!tenant) {
    log::Warn(
        "the device's tenant is not known ({}); apps with DeviceAuthentication are refused "
        "until it is",
        tenant.error().message());
    return;
  }
  if (auto r = credentials_->SetTenant(*tenant); !r) {
    log::Warn("remembering the device's tenant: {}", r.error().message());
  }
}

Json Agent::Identity() const {
  auto pub = keys_->GetPublicKey(rot::kIdentityKeyLabel);
  return {{"device_id", device_id_},
          {"key_store", keys_->backend()},
          {"public_key", pub ? Json(pub->ToPem()) : Json()}};
}

Json Agent::Status() const {
  const SystemTime now = clock_.Now();
  std::lock_guard lock(mu_);
  Json last = nullptr;
  if (last_outcome_) {
    last = {{"at", FormatRfc3339(last_outcome_->at)},
            {"result", last_outcome_->passed ? "passed" : "failed"},
            {"failures", last_outcome_->failures}};
  }
  Json log = measurements_->Status();
  const auto queue = failures_->Stats();
  const std::optional<formats::Guid> tenant = credentials_->tenant();
  return {{"device_id", device_id_},
          {"tenant_id", tenant ? Json(tenant->ToString()) : Json()},
          {"service_url", config_.service_url},
          {"os_version", config_.os_version},
          {"credential", CredentialKindName(attestor_->BestCredential())},
          {"client_certificate", ChainJson(attestor_->SavedClientCertificate(), now)},
          {"update_certificate", ChainJson(attestor_->SavedUpdateCertificate(), now)},
          {"last_attestation", last},
          {"last_error", last_error_.empty() ? Json() : Json(last_error_)},
          {"consecutive_failures", scheduler_.consecutive_failures()},
          {"next_attestation", FormatRfc3339(next_attempt_)},
          {"failure_queue", {{"events", queue.events}, {"dropped", queue.dropped}}},
          {"update", update_ ? update_->Status() : Json()},
          {"next_update_check", FormatRfc3339(next_check_)},
          {"apps", runner_ ? runner_->Status() : Json::array()},
          {"apps_error", runner_error_.empty() ? Json() : Json(runner_error_)},
          {"measurements", log["log"]},
          {"measurement_log", log}};
}

Json Agent::HandleControl(const Json& request) {
  const std::string command = request.value("command", "");
  if (command == "status") return Status();
  if (command == "identity") return Identity();
  if (command == "attest") {
    AttestNow();
    return {{"ok", true}, {"message", "attestation requested"}};
  }
  if (command == "update-now") {
    return UpdateNow(request.value("ignore_window", false)).ToJson();
  }
  if (command == "update-apply") {
    auto it = request.find("path");
    if (it == request.end() || !it->is_string() || it->get<std::string>().empty() ||
        it->get<std::string>().front() != '/') {
      return {{"error", "update-apply needs an absolute \"path\""}};
    }
    return ApplyBundle(it->get<std::string>(), request.value("ignore_window", false)).ToJson();
  }
  if (command == "update-defer") {
    auto component = formats::Guid::Parse(request.value("component_id", ""));
    const int64_t minutes = request.value("minutes", int64_t{0});
    if (!component || minutes <= 0) {
      return {{"error", "update-defer needs \"component_id\" and positive \"minutes\""}};
    }
    auto until = update_->RequestDeferral(*component, std::chrono::minutes(minutes));
    if (!until) return {{"error", until.error().message()}};
    return {{"ok", true}, {"deferred_until", FormatRfc3339(*until)}};
  }
  if (command.starts_with("app-")) return HandleAppControl(command, request);
  return {{"error", fmt::format("unknown command '{}' (status, identity, attest, update-now, "
                                "update-apply, update-defer, app-list, app-show, app-start, "
                                "app-stop, app-logs)",
                                command.substr(0, 32))}};
}

Json Agent::HandleAppControl(const std::string& command, const Json& request) {
  if (!runner_)
    return {{"error", fmt::format("apps cannot run on this device: {}", runner_error_)}};
  if (command == "app-list") return {{"apps", runner_->List()}};
  auto error = [](const Error& e) { return Json{{"error", e.message()}}; };
  auto it = request.find("app");
  if (it == request.end() || !it->is_string() || it->get<std::string>().empty()) {
    return {{"error", fmt::format("{} needs \"app\" (a component ID or app name)", command)}};
  }
  auto component = runner_->Resolve(it->get<std::string>());
  if (!component) return error(component.error());
  if (command == "app-show") {
    auto shown = runner_->Show(*component, request.value("spec", false));
    return shown ? *shown : error(shown.error());
  }
  if (command == "app-stop") {
    auto stopped = runner_->StopApp(*component);
    return stopped ? *stopped : error(stopped.error());
  }
  if (command == "app-start") {
    auto started = runner_->StartApp(*component);
    if (!started) return error(started.error());
    return {{"ok", true}};
  }
  if (command == "app-logs") {
    const std::string stream = request.value("stream", "stdout");
    if (stream != "stdout" && stream != "stderr") {
      return {{"error", "app-logs: \"stream\" must be \"stdout\" or \"stderr\""}};
    }
    const int64_t lines = request.value("lines", int64_t{100});
    if (lines < 1 || lines > 100000) return {{"error", "app-logs: \"lines\" must be 1..100000"}};
    auto text = runner_->Logs(
        *component,
        stream == "stdout" ? supervisor::LogStream::kStdout : supervisor::LogStream::kStderr,
        static_cast<size_t>(lines));
    if (!text) return error(text.error());
    return {{"component_id", component->ToString()}, {"stream", stream}, {"text", *text}};
  }
  return {{"error", fmt::format("unknown command '{}' (app-list, app-show, app-start, app-stop, "
                                "app-logs)",
                                command.substr(0, 32))}};
}

}  // namespace moat::device::agent
