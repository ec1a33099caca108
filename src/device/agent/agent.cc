#include "device/agent/agent.h"

#include <fcntl.h>
#include <unistd.h>

#include "core/encoding.h"
#include "core/file.h"
#include "core/log.h"
#include "core/unique_fd.h"
#include "crypto/digest.h"
#include "rot/software_key_store.h"

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
  MOAT_ASSIGN_OR_RETURN(auto store, rot::SoftwareKeyStore::Open(config.key_store_path));
  MOAT_TRY(store->EnsureKey(rot::kIdentityKeyLabel));
  MOAT_TRY(store->EnsureKey(rot::kTlsClientKeyLabel));
  return std::unique_ptr<rot::KeyStore>(std::move(store));
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
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey identity,
                        agent->keys_->GetPublicKey(rot::kIdentityKeyLabel));
  agent->device_id_ = rot::DeviceIdOf(identity);
  log::Info("device ID {} (key store: {})", agent->device_id_, agent->keys_->backend());

  MOAT_ASSIGN_OR_RETURN(agent->log_, MeasureOs(agent->config_));
  for (const auto& m : agent->log_.entries) {
    MOAT_TRY(agent->keys_->Extend(m.pcr, m.digest));
    log::Info("measured {} '{}' {}: sha256 {}", formats::MeasurementKindName(m.kind), m.name,
              m.version, HexEncode(m.digest));
  }
  MOAT_ASSIGN_OR_RETURN(std::string root_pem,
                        ReadFile(agent->config_.service_root_certificate, 64 * 1024));
  auto root = crypto::Certificate::FromPem(root_pem);
  if (!root) {
    return Fail(root.error().WithContext(agent->config_.service_root_certificate.string()));
  }
  agent->attestor_ =
      std::make_unique<Attestor>(agent->config_, *agent->keys_, clock, std::move(*root));
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
  agent->next_attempt_ = clock.Now();
  agent->thread_ = std::thread([raw] { raw->Loop(); });
  agent->upload_thread_ = std::thread([raw] { raw->UploadLoop(); });
  return agent;
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
  control_.reset();
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
    auto outcome = attestor_->AttestOnce(log_, config_.os_version);
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
  Json log = formats::ToJson(log_);
  const auto queue = failures_->Stats();
  return {{"device_id", device_id_},
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
          {"measurements", log}};
}

Json Agent::HandleControl(const Json& request) {
  const std::string command = request.value("command", "");
  if (command == "status") return Status();
  if (command == "identity") return Identity();
  if (command == "attest") {
    AttestNow();
    return {{"ok", true}, {"message", "attestation requested"}};
  }
  return {{"error",
           fmt::format("unknown command '{}' (status, identity, attest)", command.substr(0, 32))}};
}

}  // namespace moat::device::agent
