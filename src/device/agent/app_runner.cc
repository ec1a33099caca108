#include "device/agent/app_runner.h"

#include <unistd.h>

#include <fmt/format.h>

#include "core/file.h"
#include "core/log.h"
#include "device/sandbox/app_network.h"
#include "device/sandbox/cgroups.h"
#include "device/sandbox/storage.h"
#include "device/supervisor/install_checks.h"
#include "formats/app_manifest.h"

namespace moat::device::agent {
namespace fs = std::filesystem;

Result<formats::Board> LoadBoardFile(const fs::path& path) {
  MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 1 << 20));
  const fs::path dir = path.parent_path();
  auto loader = [dir](std::string_view import_path) -> Result<std::string> {
    if (import_path.find("..") != std::string_view::npos || import_path.starts_with("/")) {
      return Fail(ErrorCode::kInvalidArgument, "board import '{}' leaves the board's directory",
                  import_path);
    }
    return ReadFile(dir / import_path, 1 << 20);
  };
  auto board = formats::Board::Load(text, path.filename().string(), loader);
  if (!board) return Fail(board.error().WithContext(path.string()));
  return board;
}

Result<std::unique_ptr<AppRunner>> AppRunner::Create(const Config& config, Callbacks callbacks) {
  if (::geteuid() != 0) {
    return Fail(ErrorCode::kFailedPrecondition,
                "moatd is not running as root, so it cannot sandbox apps (namespaces, cgroups, "
                "mounts and nftables need root); run it as root to run apps");
  }
  if (config.supervisor.board.empty()) {
    return Fail(ErrorCode::kFailedPrecondition,
                "config.supervisor.board is not set: apps need the board's hardware definition");
  }
  MOAT_ASSIGN_OR_RETURN(formats::Board board, LoadBoardFile(config.supervisor.board));
  auto runner = std::unique_ptr<AppRunner>(new AppRunner(config, std::move(board)));
  MOAT_ASSIGN_OR_RETURN(runner->instance_, ClaimInstance(config));
  MOAT_ASSIGN_OR_RETURN(runner->cgroups_, sandbox::DetectCgroupLayout());
  // What a crashed run of this instance left: no app of ours runs yet, so all of it is stale.
  MOAT_TRY(sandbox::RemoveInstanceCgroups(*runner->cgroups_, runner->instance_.instance_id));
  MOAT_ASSIGN_OR_RETURN(sandbox::InstanceNetwork stale,
                        sandbox::RemoveInstanceNetwork(runner->instance_.instance_id));
  if (!stale.interfaces.empty() || !stale.tables.empty()) {
    log::Warn("removed {} interface(s) and {} nftables table(s) left by an earlier run",
              stale.interfaces.size(), stale.tables.size());
  }
  // app-ids.json: {"<component>": {"uid": n, "gid": n}}
  auto text = ReadFile(runner->layout_.app_ids(), 1 << 20);
  if (text) {
    MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(*text, runner->layout_.app_ids().string()));
    if (j.is_object()) {
      for (const auto& [k, v] : j.items()) {
        auto id = formats::Guid::Parse(k);
        if (!id || !v.is_object() || !v.contains("uid") || !v.contains("gid")) continue;
        runner->ids_[*id] = {.uid = v["uid"].get<uid_t>(), .gid = v["gid"].get<gid_t>()};
      }
    }
  } else if (text.error().code() != ErrorCode::kNotFound) {
    return Fail(text.error());
  }
  supervisor::SupervisorOptions options;
  options.restart.crash_loop_crashes = config.supervisor.crash_loop_crashes;
  options.restart.crash_loop_window = config.supervisor.crash_loop_window;
  options.on_failure = std::move(callbacks.on_failure);
  options.on_crash_loop = std::move(callbacks.on_crash_loop);
  options.device_authority = std::move(callbacks.device_authority);
  options.cgroup_layout = runner->cgroups_;
  options.network_pool = runner->instance_.network_pool;
  MOAT_ASSIGN_OR_RETURN(runner->supervisor_, supervisor::Supervisor::Create(std::move(options)));
  return runner;
}

AppRunner::~AppRunner() { Shutdown(); }

void AppRunner::Shutdown() {
  if (!supervisor_) return;
  supervisor_->Shutdown();
  RemoveLeftovers();
}

void AppRunner::RemoveLeftovers() const {
  // The supervisor removes each app's cgroups and network as it stops it; this catches what a
  // failed teardown left, so a stopped moatd leaves nothing of its instance behind.
  if (cgroups_) {
    if (auto r = sandbox::RemoveInstanceCgroups(*cgroups_, instance_.instance_id); !r) {
      log::Warn("removing instance '{}' cgroups: {}", instance_.instance_id, r.error().message());
    }
  }
  if (auto r = sandbox::RemoveInstanceNetwork(instance_.instance_id); !r) {
    log::Warn("removing instance '{}' network: {}", instance_.instance_id, r.error().message());
  }
}

Result<supervisor::AppIds> AppRunner::IdsFor(const formats::Guid& component) {
  std::lock_guard lock(mu_);
  MOAT_ASSIGN_OR_RETURN(supervisor::AppIds ids,
                        supervisor::AllocateAppIds(ids_, component, instance_.ids));
  if (!ids_.contains(component)) {
    ids_[component] = ids;
    Json j = Json::object();
    for (const auto& [c, i] : ids_) j[c.ToString()] = {{"uid", i.uid}, {"gid", i.gid}};
    MOAT_TRY(AtomicWriteFile(layout_.app_ids(), DumpJson(j), {.mode = 0600}));
  }
  return ids;
}

Result<void> AppRunner::Run(const update::InstalledApp& app) {
  const update::InstalledImage& image = app.current;
  MOAT_ASSIGN_OR_RETURN(formats::AppManifest manifest,
                        formats::ParseAppManifest(image.manifest_json));
  MOAT_ASSIGN_OR_RETURN(supervisor::AppIds ids, IdsFor(image.component_id));
  supervisor::AppInstall install{.instance_id = instance_.instance_id,
                                 .root_image = image.root,
                                 .storage_image = {},
                                 .log_dir = layout_.app_logs() / image.component_id.ToString(),
                                 .ids = ids,
                                 .runtime_binds = {}};
  MOAT_TRY(MakeDirectories(install.log_dir, 0700));
  if (manifest.capabilities.mutable_storage) {
    MOAT_TRY(MakeDirectories(layout_.app_storage(), 0700));
    install.storage_image = layout_.app_storage() / (image.component_id.ToString() + ".img");
    if (!fs::exists(install.storage_image)) {
      MOAT_TRY(sandbox::CreateStorageImage(
          install.storage_image,
          supervisor::StorageImageKb(manifest.capabilities.mutable_storage->size_kb),
          {.owner_uid = ids.uid, .owner_gid = ids.gid}));
    }
  }
  supervisor::SupervisedApp supervised;
  MOAT_ASSIGN_OR_RETURN(supervised.spec,
                        supervisor::BuildSandboxSpec(install, manifest, board_, policy_));
  // No resolver yet: a manifest naming hosts is refused rather than run with holes.
  MOAT_ASSIGN_OR_RETURN(supervised.network_policy,
                        supervisor::BuildNetworkPolicy(manifest, supervisor::HostResolver()));
  // Update-pending events, deferral and app-to-app channels (docs/supervisor.md "App services").
  supervised.services = supervisor::BuildAppServices(manifest);
  supervised.component_id = image.component_id;
  supervised.image_id = image.package_image_id;
  auto removed = supervisor_->Remove(image.component_id);
  if (!removed && removed.error().code() != ErrorCode::kNotFound) return Fail(removed.error());
  MOAT_TRY(supervisor_->Add(std::move(supervised)));
  {
    std::lock_guard lock(mu_);
    running_versions_[image.component_id] = image.version;
    names_[image.component_id] = image.name;
  }
  log::Info("running app '{}' {} ({})", image.name, image.version, image.component_id.ToString());
  return Ok();
}

void AppRunner::Stop(const formats::Guid& component) {
  auto r = supervisor_->Remove(component);
  if (!r && r.error().code() != ErrorCode::kNotFound) {
    log::Warn("stopping app {}: {}", component.ToString(), r.error().message());
  }
  std::lock_guard lock(mu_);
  running_versions_.erase(component);
  names_.erase(component);
}

std::vector<formats::Guid> AppRunner::Running() const {
  std::vector<formats::Guid> out;
  std::lock_guard lock(mu_);
  for (const auto& [c, v] : running_versions_) {
    auto s = supervisor_->Status(c);
    if (s && s->state == supervisor::AppState::kRunning) out.push_back(c);
  }
  return out;
}

Json AppRunner::Status() const {
  Json out = Json::array();
  std::lock_guard lock(mu_);
  for (const auto& [c, v] : running_versions_) {
    auto s = supervisor_->Status(c);
    if (!s) continue;
    out.push_back({{"component_id", c.ToString()},
                   {"version", v},
                   {"state", supervisor::AppStateName(s->state)},
                   {"launches", s->launches},
                   {"failures", s->failures},
                   {"last_error", s->last_error}});
  }
  return out;
}

Result<formats::Guid> AppRunner::Resolve(std::string_view app) const {
  if (auto id = formats::Guid::Parse(app)) {
    if (supervisor_->Status(*id)) return *id;
  } else {
    std::lock_guard lock(mu_);
    for (const auto& [c, name] : names_) {
      if (name == app) return c;
    }
  }
  return Fail(ErrorCode::kNotFound, "no app '{}' on this device (moatctl app list shows them)",
              app.substr(0, 64));
}

Json AppRunner::Describe(const supervisor::AppInfo& info) const {
  const supervisor::AppStatus& s = info.status;
  auto version = running_versions_.find(info.component_id);
  auto name = names_.find(info.component_id);
  Json last_exit = nullptr;
  if (s.last_exit) {
    last_exit = s.last_exit->exited() ? Json{{"exit_code", s.last_exit->code()}}
                                      : Json{{"signal", s.last_exit->signal()}};
  }
  Json next = nullptr;
  if (s.next_start) {
    next = std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                    *s.next_start - std::chrono::steady_clock::now())
                                    .count());
  }
  return {{"component_id", info.component_id.ToString()},
          {"image_id", info.image_id.ToString()},
          {"name", name != names_.end() ? Json(name->second) : Json(info.app_name)},
          {"version", version != running_versions_.end() ? Json(version->second) : Json()},
          {"state", supervisor::AppStateName(s.state)},
          {"pid", s.pid ? Json(*s.pid) : Json()},
          {"launches", s.launches},
          {"failures", s.failures},
          {"last_exit", last_exit},
          {"last_error", s.last_error.empty() ? Json() : Json(s.last_error)},
          {"next_start_in_ms", next}};
}

Json AppRunner::List() const {
  Json out = Json::array();
  const std::vector<supervisor::AppInfo> apps = supervisor_->List();
  std::lock_guard lock(mu_);
  for (const auto& info : apps) out.push_back(Describe(info));
  return out;
}

Result<Json> AppRunner::Show(const formats::Guid& component, bool spec) const {
  for (const auto& info : supervisor_->List()) {
    if (info.component_id != component) continue;
    Json out;
    {
      std::lock_guard lock(mu_);
      out = Describe(info);
    }
    if (spec) {
      auto s = supervisor_->Spec(component);
      if (!s) break;  // removed meanwhile
      out["spec"] = sandbox::SpecToJson(*s);
      out["spec_text"] = s->Describe();
    }
    return out;
  }
  return Fail(ErrorCode::kNotFound, "no app {} on this device", component.ToString());
}

Result<Json> AppRunner::StopApp(const formats::Guid& component) {
  MOAT_ASSIGN_OR_RETURN(std::optional<sandbox::ExitStatus> ended, supervisor_->StopApp(component));
  Json exit = nullptr;
  if (ended) {
    exit = ended->exited() ? Json{{"exit_code", ended->code()}} : Json{{"signal", ended->signal()}};
  }
  log::Info("app {} stopped by the operator", component.ToString());
  return Json{{"ok", true}, {"was_running", ended.has_value()}, {"exit", exit}};
}

Result<void> AppRunner::StartApp(const formats::Guid& component) {
  MOAT_TRY(supervisor_->StartApp(component));
  log::Info("app {} started by the operator", component.ToString());
  return Ok();
}

Result<std::string> AppRunner::Logs(const formats::Guid& component, supervisor::LogStream stream,
                                    size_t lines) const {
  MOAT_ASSIGN_OR_RETURN(std::string text, supervisor_->LogTail(component, stream, kMaxLogBytes));
  // The last `lines` lines (a final line without '\n' counts as one).
  if (lines == 0) return std::string();
  size_t end = text.size();
  if (end > 0 && text[end - 1] == '\n') --end;
  size_t start = end;
  for (size_t n = 0; start > 0;) {
    const size_t nl = text.rfind('\n', start - 1);
    if (nl == std::string::npos) {
      start = 0;
      break;
    }
    if (++n == lines) {
      start = nl + 1;
      break;
    }
    start = nl;
  }
  return text.substr(start);
}

std::chrono::seconds AppRunner::AskUpdateDeferral(const formats::Guid& component, SystemTime now,
                                                  std::chrono::milliseconds answer_timeout) {
  auto answer = supervisor_->NotifyUpdatePending(
      component, now + std::chrono::duration_cast<SystemTime::duration>(answer_timeout),
      answer_timeout);
  if (!answer) {
    log::Info("app {} not told of its pending update: {}", component.ToString(),
              answer.error().message());
    return std::chrono::seconds(0);
  }
  switch (answer->kind) {
    case supervisor::UpdateAnswer::Kind::kDeferred:
      return answer->defer_for;
    case supervisor::UpdateAnswer::Kind::kAcknowledged:
      log::Info("app {} acknowledged its pending update", component.ToString());
      return std::chrono::seconds(0);
    case supervisor::UpdateAnswer::Kind::kNoAnswer:
      log::Info("app {} did not answer its update notification in time; updating it",
                component.ToString());
      return std::chrono::seconds(0);
  }
  return std::chrono::seconds(0);
}

}  // namespace moat::device::agent
