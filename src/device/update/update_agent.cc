#include "device/update/update_agent.h"

#include <fmt/format.h>

#include <algorithm>
#include <system_error>

#include "core/encoding.h"
#include "core/file.h"
#include "core/log.h"
#include "crypto/digest.h"
#include "formats/app_manifest.h"
#include "formats/json_reader.h"
#include "formats/update_bundle.h"

namespace moat::device::update {
namespace fs = std::filesystem;
namespace tuf = formats::tuf;

namespace {

constexpr std::string_view kKeysTarget = "image-signing-keys.json";
constexpr std::string_view kPackageSuffix = ".imagepackage";
constexpr size_t kMaxStateBytes = 1 << 20;
constexpr size_t kMaxDetailBytes = 2000;

bool ValidGroupId(std::string_view g) {
  return !g.empty() && g.size() <= 64 && std::all_of(g.begin(), g.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// image-signing-keys.json: {"keys": [{"id", "name", "public_key_pem"}]}.
Result<std::vector<crypto::PublicKey>> ParseSigningKeys(std::string_view bytes) {
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(bytes, kKeysTarget));
  formats::ObjectReader r(j, kKeysTarget);
  MOAT_TRY(r.status());
  const Json* keys = r.Member("keys");
  MOAT_TRY(r.NoOtherFields());
  if (!keys || !keys->is_array()) {
    return Fail(ErrorCode::kInvalidArgument, "{}: 'keys' must be an array", kKeysTarget);
  }
  if (keys->size() > 256) {
    return Fail(ErrorCode::kLimitExceeded, "{}: more than 256 keys", kKeysTarget);
  }
  std::vector<crypto::PublicKey> out;
  for (size_t i = 0; i < keys->size(); ++i) {
    const std::string path = fmt::format("{}.keys[{}]", kKeysTarget, i);
    formats::ObjectReader k((*keys)[i], path);
    MOAT_TRY(k.status());
    MOAT_TRY(k.RequiredString("id", 256));
    MOAT_TRY(k.OptionalString("name", 1024));
    MOAT_ASSIGN_OR_RETURN(std::string pem, k.RequiredString("public_key_pem", 16 << 10));
    MOAT_TRY(k.NoOtherFields());
    auto key = crypto::PublicKey::FromPem(pem);
    if (!key) return Fail(key.error().WithContext(path));
    out.push_back(std::move(*key));
  }
  return out;
}

struct AppTarget {
  std::string name;
  std::string image_id;
  formats::Guid component_id;
  std::string version;
};

// The app targets of verified targets metadata; other image types are skipped (noted in
// `skipped`).
Result<std::vector<AppTarget>> AppTargets(const tuf::Targets& targets,
                                          std::vector<std::string>& skipped) {
  std::vector<AppTarget> out;
  for (const auto& [name, file] : targets.targets) {
    if (!name.ends_with(kPackageSuffix)) continue;
    const std::string image_id = name.substr(0, name.size() - kPackageSuffix.size());
    if (!IsHex64(image_id) || HexEncode(file.sha256) != image_id) {
      return Fail(ErrorCode::kInvalidArgument,
                  "target '{}': the name is not the SHA-256 of the file it lists", name);
    }
    formats::ObjectReader c(file.custom, fmt::format("target '{}'.custom", name));
    MOAT_TRY(c.status());
    MOAT_ASSIGN_OR_RETURN(std::string component, c.RequiredString("component_id", 64));
    MOAT_ASSIGN_OR_RETURN(std::string type, c.RequiredString("image_type", 64));
    MOAT_ASSIGN_OR_RETURN(std::string version, c.OptionalString("version", 64));
    if (type != "Application" && type != "app") {
      skipped.push_back(fmt::format("{} ({} images are not installed by moatd yet)", name, type));
      continue;
    }
    MOAT_ASSIGN_OR_RETURN(formats::Guid id, formats::Guid::Parse(component));
    if (std::any_of(out.begin(), out.end(),
                    [&](const AppTarget& t) { return t.component_id == id; })) {
      return Fail(ErrorCode::kInvalidArgument,
                  "targets list two images for component {}; refusing to choose", component);
    }
    out.push_back({name, image_id, id, version});
  }
  return out;
}

std::string Truncate(std::string s) {
  if (s.size() > kMaxDetailBytes) s.resize(kMaxDetailBytes);
  return s;
}

}  // namespace

bool UpdateWindow::Contains(SystemTime t) const {
  const auto since_epoch = std::chrono::duration_cast<std::chrono::minutes>(t.time_since_epoch());
  const int minute = static_cast<int>(since_epoch.count() % (24 * 60));
  if (start_minute < end_minute) return minute >= start_minute && minute < end_minute;
  return minute >= start_minute || minute < end_minute;
}

Result<UpdateWindow> ParseUpdateWindow(std::string_view text) {
  int sh = 0, sm = 0, eh = 0, em = 0;
  char tail = 0;
  const std::string s(text);
  if (s.size() != 11 ||
      std::sscanf(s.c_str(), "%2d:%2d-%2d:%2d%c", &sh, &sm, &eh, &em, &tail) != 4 || sh < 0 ||
      sh > 23 || eh < 0 || eh > 23 || sm < 0 || sm > 59 || em < 0 || em > 59) {
    return Fail(ErrorCode::kInvalidArgument,
                "update window '{}': expected \"HH:MM-HH:MM\" (UTC, 24-hour)", text.substr(0, 32));
  }
  UpdateWindow w{.start_minute = sh * 60 + sm, .end_minute = eh * 60 + em};
  if (w.start_minute == w.end_minute) {
    return Fail(ErrorCode::kInvalidArgument, "update window '{}': start equals end", text);
  }
  return w;
}

Json UpdateOutcome::ToJson() const {
  Json j = {{"result", result},
            {"at", FormatRfc3339(at)},
            {"detail", detail},
            {"installed", installed},
            {"reported", reported}};
  j["targets_version"] = targets_version ? Json(*targets_version) : Json();
  return j;
}

Result<std::unique_ptr<UpdateAgent>> UpdateAgent::Open(fs::path state_dir, AppStore& store,
                                                       UpdateTransport* transport,
                                                       UpdateHooks hooks, const Clock& clock,
                                                       UpdateAgentOptions options) {
  fs::path dir = state_dir / "update";
  MOAT_TRY(MakeDirectories(dir / "tuf", 0700));
  auto agent = std::unique_ptr<UpdateAgent>(new UpdateAgent(
      std::move(dir), store, transport, std::move(hooks), clock, std::move(options)));
  MOAT_TRY(agent->LoadState());
  return agent;
}

// state.json: {"group", "targets_version", "bad": {image: {...}}, "first_offered": {image: t},
// "deferrals": {component: t}, "last_update": {...}}. Written by us; still read strictly.
Result<void> UpdateAgent::LoadState() {
  auto text = ReadFile(dir_ / "state.json", kMaxStateBytes);
  if (!text) {
    if (text.error().code() == ErrorCode::kNotFound) return Ok();
    return Fail(text.error());
  }
  auto parsed = ParseJson(*text, "update/state.json");
  if (!parsed || !parsed->is_object()) {
    log::Warn("update/state.json is unreadable; starting with an empty update state");
    return Ok();
  }
  const Json& j = *parsed;
  group_ = j.value("group", "");
  targets_version_ = j.value("targets_version", int64_t{0});
  if (auto it = j.find("bad"); it != j.end() && it->is_object()) {
    for (const auto& [image, b] : it->items()) {
      if (!b.is_object()) continue;
      bad_[image] = {b.value("component_id", ""), b.value("targets_version", int64_t{0}),
                     b.value("reason", "")};
    }
  }
  if (auto it = j.find("first_offered"); it != j.end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) continue;
      auto t = ParseRfc3339(v.get<std::string>());
      if (t) first_offered_[k] = *t;
    }
  }
  if (auto it = j.find("deferrals"); it != j.end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) continue;
      auto t = ParseRfc3339(v.get<std::string>());
      auto g = formats::Guid::Parse(k);
      if (t && g) deferrals_[*g] = *t;
    }
  }
  if (auto it = j.find("last_update"); it != j.end() && it->is_object()) {
    last_.result = it->value("result", "none");
    last_.detail = it->value("detail", "");
    if (auto at = ParseRfc3339(it->value("at", ""))) last_.at = *at;
    if (auto tv = it->find("targets_version"); tv != it->end() && tv->is_number_integer()) {
      last_.targets_version = tv->get<int64_t>();
    }
  }
  return Ok();
}

Result<void> UpdateAgent::SaveState() {
  Json bad = Json::object();
  for (const auto& [image, b] : bad_) {
    bad[image] = {{"component_id", b.component_id},
                  {"targets_version", b.targets_version},
                  {"reason", b.reason}};
  }
  Json offered = Json::object();
  for (const auto& [image, t] : first_offered_) offered[image] = FormatRfc3339(t);
  Json deferrals = Json::object();
  for (const auto& [c, t] : deferrals_) deferrals[c.ToString()] = FormatRfc3339(t);
  Json j = {{"group", group_},
            {"targets_version", targets_version_},
            {"bad", bad},
            {"first_offered", offered},
            {"deferrals", deferrals},
            {"last_update", last_.ToJson()}};
  // An unchanged check changes only the outcome's time: not worth an fsync (the time is still
  // reported to the service, and persisted with the next real change).
  Json essence = j;
  essence["last_update"].erase("at");
  std::string key = DumpJson(essence);
  if (key == saved_essence_) return Ok();
  MOAT_TRY(AtomicWriteFile(dir_ / "state.json", DumpJson(j), {.mode = 0600}));
  saved_essence_ = std::move(key);
  return Ok();
}

Result<void> UpdateAgent::SwitchGroup(const std::string& group) {
  if (group == group_) return Ok();
  log::Info("device group is now '{}' (was '{}'): trust starts over from its 1.root.json", group,
            group_);
  // Other groups' trust goes: moving back later starts over too (docs/formats/tuf.md).
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ / "tuf", ec)) {
    if (entry.path().filename() == group) continue;
    fs::remove_all(entry.path(), ec);
    if (ec)
      return Fail(ErrorCode::kInternal, "removing {}: {}", entry.path().string(), ec.message());
  }
  if (ec)
    return Fail(ErrorCode::kInternal, "listing {}: {}", (dir_ / "tuf").string(), ec.message());
  MOAT_TRY(SyncDirectory(dir_ / "tuf"));
  group_ = group;
  targets_version_ = 0;
  first_offered_.clear();
  return SaveState();
}

UpdateOutcome UpdateAgent::Check(bool ignore_window) {
  std::lock_guard lock(mu_);
  UpdateOutcome out;
  out.at = clock_.Now();
  if (!transport_) {
    out.result = "failed";
    out.detail = "no service configured";
    return Finish(std::move(out));
  }
  auto group = transport_->DeviceGroup();
  if (!group) {
    out.result = "failed";
    out.detail = Truncate(fmt::format("whoami: {}", group.error().message()));
    return Finish(std::move(out));
  }
  if (!*group) {
    out.detail = "the device is in no device group: nothing to install";
    return Finish(std::move(out));
  }
  if (!ValidGroupId(**group)) {
    out.result = "failed";
    out.detail = "whoami: the device group id is not a valid path component";
    return Finish(std::move(out));
  }
  if (auto s = SwitchGroup(**group); !s) {
    out.result = "failed";
    out.detail = Truncate(s.error().message());
    return Finish(std::move(out));
  }
  UpdateTransport* t = transport_;
  std::string g = **group;
  Fetcher fetcher = [t, g](std::string_view path, size_t max_bytes) {
    return t->Fetch(g, path, max_bytes);
  };
  if (auto r = RunInto(out, std::move(fetcher), g, /*bootstrap=*/true, ignore_window); !r) {
    out.result = "failed";
    out.detail = Truncate(r.error().message());
  }
  return Finish(std::move(out));
}

UpdateOutcome UpdateAgent::ApplyBundle(std::span<const uint8_t> bytes, bool ignore_window) {
  std::lock_guard lock(mu_);
  UpdateOutcome out;
  out.at = clock_.Now();
  auto view = formats::ParseUpdateBundle(bytes);
  if (!view) {
    out.result = "failed";
    out.detail = Truncate(view.error().message());
    return Finish(std::move(out));
  }
  if (group_.empty()) {
    out.result = "failed";
    out.detail =
        "the device has no trusted root yet: it must complete one online update check first "
        "(a bundle's root must chain from the device's trusted root)";
    return Finish(std::move(out));
  }
  if (view->group_id != group_) {
    out.result = "failed";
    out.detail =
        Truncate(fmt::format("the bundle is for device group '{}', but the device is in group '{}'",
                             view->group_id, group_));
    return Finish(std::move(out));
  }
  auto files = std::make_shared<formats::UpdateBundleView>(std::move(*view));
  Fetcher fetcher = [files](std::string_view path, size_t max_bytes) -> Result<std::string> {
    auto it = files->files.find(path);
    if (it == files->files.end()) {
      return Fail(ErrorCode::kNotFound, "{}: not in the bundle", path);
    }
    if (it->second.size() > max_bytes) {
      return Fail(ErrorCode::kLimitExceeded, "{}: more than {} bytes", path, max_bytes);
    }
    return std::string(it->second);
  };
  if (auto r = RunInto(out, std::move(fetcher), group_, /*bootstrap=*/false, ignore_window); !r) {
    out.result = "failed";
    out.detail = Truncate(r.error().message());
  }
  return Finish(std::move(out));
}

Result<void> UpdateAgent::RunInto(UpdateOutcome& out, Fetcher fetcher, const std::string& group,
                                  bool bootstrap, bool ignore_window) {
  MOAT_ASSIGN_OR_RETURN(auto trusted, DirectoryTrustedStore::Create(dir_ / "tuf" / group));
  MOAT_ASSIGN_OR_RETURN(auto root, trusted->Load(tuf::Role::kRoot));
  if (!root) {
    if (!bootstrap) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "no trusted root for group '{}': the device must check online first", group);
    }
    // Trust on enrolment: 1.root.json over the authenticated channel (docs/formats/tuf.md).
    MOAT_ASSIGN_OR_RETURN(std::string bytes,
                          fetcher("1.root.json", TufClientOptions{}.max_root_bytes));
    MOAT_ASSIGN_OR_RETURN(auto parsed, tuf::ParseRoot(bytes));
    if (parsed.signed_.version != 1) {
      return Fail(ErrorCode::kVerificationFailed, "1.root.json holds version {}",
                  parsed.signed_.version);
    }
    MOAT_TRY(tuf::VerifyRole(parsed.envelope, parsed.signed_, tuf::Role::kRoot, "1.root.json"));
    MOAT_TRY(trusted->Save(tuf::Role::kRoot, bytes));
    log::Info("trusting group '{}' from its 1.root.json (trust on enrolment)", group);
  }
  MOAT_ASSIGN_OR_RETURN(TufClient client,
                        TufClient::Create(std::move(fetcher), *trusted, clock_, options_.tuf));
  MOAT_TRY(client.Refresh());
  const tuf::Targets& targets = *client.trusted_targets();
  out.targets_version = targets.version;
  targets_version_ = targets.version;

  std::vector<std::string> skipped;
  MOAT_ASSIGN_OR_RETURN(std::vector<AppTarget> apps, AppTargets(targets, skipped));
  std::vector<const AppTarget*> pending;
  std::vector<std::string> notes = skipped;
  for (const AppTarget& t : apps) {
    MOAT_ASSIGN_OR_RETURN(auto installed, store_.Get(t.component_id));
    if (installed && installed->current.image_id == t.image_id) continue;
    if (auto b = bad_.find(t.image_id);
        b != bad_.end() && targets.version <= b->second.targets_version) {
      notes.push_back(fmt::format("{}: not reinstalled, rolled back at targets version {} ({})",
                                  t.name, b->second.targets_version, b->second.reason));
      continue;
    }
    first_offered_.emplace(t.image_id, out.at);
    pending.push_back(&t);
  }
  // Forget offers that are no longer pending.
  std::erase_if(first_offered_, [&](const auto& kv) {
    return std::none_of(pending.begin(), pending.end(),
                        [&](const AppTarget* t) { return t->image_id == kv.first; });
  });
  if (pending.empty()) {
    out.result = "none";
    out.detail =
        notes.empty() ? "up to date" : fmt::format("up to date; {}", fmt::join(notes, "; "));
    return Ok();
  }
  if (!ignore_window && options_.window && !options_.window->Contains(out.at)) {
    out.result = "deferred";
    out.detail = fmt::format("{} update(s) pending; outside the update window", pending.size());
    return Ok();
  }
  MOAT_ASSIGN_OR_RETURN(std::string key_bytes, client.FetchTarget(kKeysTarget));
  MOAT_ASSIGN_OR_RETURN(std::vector<crypto::PublicKey> keys, ParseSigningKeys(key_bytes));

  std::vector<std::string> failures, deferred;
  for (const AppTarget* t : pending) {
    MOAT_ASSIGN_OR_RETURN(auto installed, store_.Get(t->component_id));
    if (installed) {
      auto manifest = formats::ParseAppManifest(installed->current.manifest_json);
      auto d = deferrals_.find(t->component_id);
      const SystemTime limit = first_offered_[t->image_id] + options_.max_deferral;
      // The app-facing protocol: ask the app itself (unless a deferral is still in force).
      if (manifest && manifest->capabilities.system_event_notifications && hooks_.update_pending &&
          (d == deferrals_.end() || out.at >= d->second) && out.at < limit) {
        const std::chrono::seconds asked = hooks_.update_pending(t->component_id, out.at);
        if (asked > std::chrono::seconds(0) && manifest->capabilities.software_update_deferral) {
          deferrals_[t->component_id] =
              out.at + std::min<std::chrono::seconds>(asked, options_.max_deferral);
          d = deferrals_.find(t->component_id);
          log::Info("update of '{}': the app asked to defer it by {} s", t->name, asked.count());
        }
      }
      if (manifest && manifest->capabilities.software_update_deferral && d != deferrals_.end() &&
          out.at < d->second && out.at < limit) {
        deferred.push_back(fmt::format("{} deferred by the app until {}", t->name,
                                       FormatRfc3339(std::min(d->second, limit))));
        continue;
      }
    }
    auto bytes = client.FetchTarget(t->name);
    if (!bytes) {
      failures.push_back(bytes.error().message());
      continue;
    }
    auto app = store_.Install(
        std::span(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()), keys,
        {.component_id = t->component_id,
         .version = t->version.empty() ? std::nullopt : std::optional(t->version)});
    if (!app) {
      failures.push_back(fmt::format("{}: {}", t->name, app.error().message()));
      continue;
    }
    first_offered_.erase(t->image_id);
    deferrals_.erase(t->component_id);
    out.installed.push_back(fmt::format("{} {} ({})", app->current.name, app->current.version,
                                        t->component_id.ToString()));
    if (hooks_.on_app_changed) {
      if (auto r = hooks_.on_app_changed(*app); !r) {
        failures.push_back(fmt::format("{} installed but not started: {}", app->current.name,
                                       r.error().message()));
      }
    }
  }
  std::vector<std::string> parts;
  if (!out.installed.empty())
    parts.push_back(fmt::format("installed {}", fmt::join(out.installed, ", ")));
  for (auto& d : deferred) parts.push_back(d);
  for (auto& f : failures) parts.push_back(f);
  out.result = !failures.empty() ? "failed" : !out.installed.empty() ? "ok" : "deferred";
  out.detail = Truncate(fmt::format("{}", fmt::join(parts, "; ")));
  return Ok();
}

UpdateOutcome UpdateAgent::HandleCrashLoop(const formats::Guid& component) {
  std::lock_guard lock(mu_);
  UpdateOutcome out;
  out.at = clock_.Now();
  out.targets_version = targets_version_ ? std::optional(targets_version_) : std::nullopt;
  auto app = store_.Get(component);
  if (!app || !*app) {
    out.detail =
        fmt::format("crash loop of {}, which is not installed by moatd", component.ToString());
    return out;  // not an update outcome: nothing recorded
  }
  const InstalledImage& current = (*app)->current;
  if (!(*app)->previous || out.at - current.installed_at > options_.rollback_window) {
    out.detail =
        fmt::format("crash loop of '{}' {}: {}; not rolled back", current.name, current.version,
                    (*app)->previous ? "installed too long ago" : "no previous version");
    log::Warn("{}", out.detail);
    return out;
  }
  if (hooks_.stop_app) hooks_.stop_app(component);
  auto abandoned = store_.Rollback(component);
  if (!abandoned) {
    out.result = "failed";
    out.detail =
        Truncate(fmt::format("rollback of '{}': {}", current.name, abandoned.error().message()));
    return Finish(std::move(out));
  }
  bad_[abandoned->image_id] = {component.ToString(), targets_version_,
                               fmt::format("'{}' {} crash-looped", current.name, current.version)};
  out.result = "rolled-back";
  out.detail = fmt::format("'{}' {} crash-looped after its update; rolled back to {}", current.name,
                           current.version, (*app)->previous->version);
  if (hooks_.on_app_changed) {
    auto now_app = store_.Get(component);
    if (now_app && *now_app) {
      if (auto r = hooks_.on_app_changed(**now_app); !r) {
        out.detail += fmt::format("; the previous version did not start: {}", r.error().message());
      }
    }
  }
  return Finish(std::move(out));
}

Result<SystemTime> UpdateAgent::RequestDeferral(const formats::Guid& component,
                                                std::chrono::seconds duration) {
  std::lock_guard lock(mu_);
  MOAT_ASSIGN_OR_RETURN(auto app, store_.Get(component));
  if (!app) return Fail(ErrorCode::kNotFound, "app {} is not installed", component.ToString());
  MOAT_ASSIGN_OR_RETURN(auto manifest, formats::ParseAppManifest(app->current.manifest_json));
  if (!manifest.capabilities.software_update_deferral) {
    return Fail(ErrorCode::kPermissionDenied,
                "app '{}' may not defer updates (its manifest lacks SoftwareUpdateDeferral)",
                manifest.name);
  }
  const SystemTime until =
      clock_.Now() + std::min<std::chrono::seconds>(duration, options_.max_deferral);
  deferrals_[component] = until;
  MOAT_TRY(SaveState());
  return until;
}

UpdateOutcome UpdateAgent::Finish(UpdateOutcome out) {
  if (transport_) {
    last_ = out;  // the report carries this outcome
    auto r = transport_->PostStatus(DumpJson(ReportBodyLocked()));
    out.reported = r.has_value();
    if (!r) log::Warn("status report not sent: {}", r.error().message());
  }
  last_ = out;
  if (auto s = SaveState(); !s) log::Warn("update state not saved: {}", s.error().message());
  const auto level =
      out.result == "failed" || out.result == "rolled-back" ? log::Level::kWarn : log::Level::kInfo;
  if (level == log::Level::kWarn) {
    log::Warn("update: {}: {}", out.result, out.detail);
  } else {
    log::Info("update: {}: {}", out.result, out.detail);
  }
  return out;
}

Json UpdateAgent::ReportBodyLocked() const {
  Json installed = Json::array();
  if (auto apps = store_.List()) {
    for (const auto& a : *apps) {
      installed.push_back({{"component_id", a.current.component_id.ToString()},
                           {"image_id", a.current.image_id},
                           {"version", a.current.version}});
    }
  }
  Json running = Json::array();
  if (hooks_.running) {
    for (const auto& c : hooks_.running()) running.push_back(c.ToString());
  }
  Json last = {{"result", last_.result}, {"at", FormatRfc3339(last_.at)}, {"detail", last_.detail}};
  if (last_.targets_version) last["targets_version"] = *last_.targets_version;
  return {{"os", {{"name", options_.os_name}, {"version", options_.os_version}}},
          {"installed", installed},
          {"running", running},
          {"last_update", last}};
}

Json UpdateAgent::ReportBody() const {
  std::lock_guard lock(mu_);
  return ReportBodyLocked();
}

Json UpdateAgent::Status() const {
  std::lock_guard lock(mu_);
  Json bad = Json::array();
  for (const auto& [image, b] : bad_) {
    bad.push_back({{"image_id", image},
                   {"component_id", b.component_id},
                   {"targets_version", b.targets_version},
                   {"reason", b.reason}});
  }
  Json report = ReportBodyLocked();
  return {{"group", group_.empty() ? Json() : Json(group_)},
          {"targets_version", targets_version_ ? Json(targets_version_) : Json()},
          {"last_update", last_.ToJson()},
          {"installed", report["installed"]},
          {"bad_images", bad}};
}

}  // namespace moat::device::update
