#include "service/deployment_api.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/encoding.h"
#include "core/log.h"
#include "formats/attestation.h"
#include "formats/json_reader.h"
#include "service/http_util.h"

namespace moat::service {

namespace tuf = formats::tuf;

struct DeploymentApi::Context {
  const net::HttpRequest& req;
  const Caller& caller;
  Tenant tenant;
  Role role = Role::kReader;
  SystemTime now;
  int64_t now_seconds = 0;
};

namespace {

using net::HttpRequest;
using net::HttpResponse;

constexpr std::string_view kNoThirdPartyAppUpdates = "no-third-party-app-updates";

HttpResponse NotFound(std::string message) {
  return ErrorResponse(Error(ErrorCode::kNotFound, std::move(message)));
}

std::string Time(int64_t unix_seconds) {
  return FormatRfc3339(store::FromUnixSeconds(unix_seconds));
}

bool IsSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// "app" -> "Application", "os" -> "OS": the image_type of a target's custom (docs/formats/tuf.md).
std::string TargetImageType(std::string_view stored) {
  return stored == "os" ? "OS" : "Application";
}

struct Group {
  std::string id;
  std::string product;
  std::string name;
  std::string app_update_policy;
  std::string Label() const { return product + "/" + name; }
};

Result<Group> FindGroup(store::Database& db, const Tenant& tenant, std::string_view product,
                        std::string_view group) {
  MOAT_ASSIGN_OR_RETURN(
      auto rows, db.Query("SELECT g.id, g.app_update_policy FROM device_groups g JOIN products p "
                          "ON p.id = g.product_id WHERE p.tenant_id = ? AND p.name = ? AND "
                          "g.name = ?",
                          {tenant.id, std::string(product), std::string(group)}));
  if (rows.empty()) {
    return Fail(ErrorCode::kNotFound, "no device group {} in product {} of tenant '{}'",
                formats::QuoteForMessage(group), formats::QuoteForMessage(product), tenant.name);
  }
  return Group{*rows[0].Text(0), std::string(product), std::string(group), *rows[0].Text(1)};
}

// "PRODUCT/GROUP" as the CLI and MoveDevice spell a device group.
Result<Group> FindGroupByLabel(store::Database& db, const Tenant& tenant, std::string_view label,
                               std::string_view path) {
  const size_t slash = label.find('/');
  if (slash == std::string_view::npos) {
    return Fail(ErrorCode::kInvalidArgument,
                "{}: {} is not PRODUCT/GROUP (e.g. \"Thermostat/Field Test\")", path,
                formats::QuoteForMessage(label));
  }
  return FindGroup(db, tenant, label.substr(0, slash), label.substr(slash + 1));
}

constexpr std::string_view kDeploymentColumns =
    "SELECT d.id, p.name, g.name, d.device_group_id, d.targets_version, d.image_count, "
    "d.created_at, d.created_by FROM deployments d JOIN device_groups g ON g.id = "
    "d.device_group_id JOIN products p ON p.id = g.product_id ";

Json DeploymentJson(const store::Row& r) {
  return {{"id", *r.Text(0)},
          {"product", *r.Text(1)},
          {"device_group", *r.Text(2)},
          {"device_group_id", *r.Text(3)},
          {"targets_version", *r.Int(4)},
          {"image_count", *r.Int(5)},
          {"created_at", Time(*r.Int(6))},
          {"created_by", *r.Text(7)}};
}

Result<Json> DeploymentImages(store::Database& db, std::string_view tenant_id,
                              std::string_view deployment_id) {
  MOAT_ASSIGN_OR_RETURN(
      auto rows,
      db.Query("SELECT i.id, i.name, i.version, i.component_id, i.image_type, i.size_bytes "
               "FROM deployment_images di JOIN images i ON i.id = di.image_id AND i.tenant_id = ? "
               "WHERE di.deployment_id = ? ORDER BY i.component_id",
               {std::string(tenant_id), std::string(deployment_id)}));
  Json list = Json::array();
  for (const auto& r : rows) {
    list.push_back({{"id", *r.Text(0)},
                    {"name", *r.Text(1)},
                    {"version", *r.Text(2)},
                    {"component_id", *r.Text(3)},
                    {"image_type", *r.Text(4)},
                    {"size", *r.Int(5)}});
  }
  return list;
}

}  // namespace

DeploymentApi::DeploymentApi(store::Database& db, Repositories& repositories, const Clock& clock,
                             Random& random)
    : db_(db), repositories_(repositories), clock_(clock), random_(random) {}

bool DeploymentApi::Routes(const HttpRequest&, std::span<const std::string_view> seg) {
  if (seg.size() < 5 || seg[0] != "api" || seg[1] != "v1" || seg[2] != "tenants") return false;
  if (seg[4] == "deployments") return seg.size() <= 6;
  if (seg[4] == "products") {
    return seg.size() == 9 && seg[6] == "device-groups" &&
           (seg[8] == "rotate-root" || seg[8] == "repository");
  }
  if (seg[4] == "devices") return seg.size() == 7 && seg[6] == "deployment-status";
  return false;
}

HttpResponse DeploymentApi::Forbidden(Context& c, std::string_view action, std::string_view target,
                                      std::string_view why) {
  auto r = db_.Transact([&](store::Session& s) -> Result<void> {
    return AuditAs(s, c.now_seconds, &c.caller, c.tenant.id, action, target, "denied", why);
  });
  if (!r) log::Error("audit log write failed: {}", r.error().message());
  return ErrorResponse(Error(ErrorCode::kPermissionDenied, std::string(why)));
}

HttpResponse DeploymentApi::Handle(const HttpRequest& req, const Caller& caller,
                                   std::span<const std::string_view> seg) {
  auto tenant = FindCallersTenant(db_, caller, seg[3]);
  if (!tenant) return ErrorResponse(tenant.error());
  const SystemTime now = clock_.Now();
  Context c{.req = req,
            .caller = caller,
            .tenant = *tenant,
            .role = *caller.RoleIn(tenant->id),
            .now = now,
            .now_seconds = store::UnixSeconds(now)};
  if (seg[4] == "deployments") {
    if (seg.size() == 5) {
      if (req.method == "GET") return List(c);
      if (req.method == "POST") return Create(c);
      return MethodNotAllowed(req);
    }
    if (req.method != "GET") return MethodNotAllowed(req);
    return Show(c, seg[5]);
  }
  if (seg[4] == "devices") {
    if (req.method != "GET") return MethodNotAllowed(req);
    const std::string device_id(seg[5]);
    if (auto v = formats::ValidateDeviceId(device_id); !v) return ErrorResponse(v.error());
    auto status = DeploymentStatusJson(db_, c.tenant.id, device_id);
    if (!status) return ErrorResponse(status.error());
    (*status)["tenant"] = c.tenant.name;
    return JsonResponse(200, *status);
  }
  auto product = DecodePathSegment(seg[5]);
  if (!product) return ErrorResponse(product.error());
  auto group = DecodePathSegment(seg[7]);
  if (!group) return ErrorResponse(group.error());
  if (seg[8] == "repository") {
    if (req.method != "GET") return MethodNotAllowed(req);
    return RepositoryInfo(c, *product, *group);
  }
  if (req.method != "POST") return MethodNotAllowed(req);
  return RotateRoot(c, *product, *group);
}

HttpResponse DeploymentApi::Create(Context& c) {
  auto body = ParseBody(c.req, 1 << 20);
  if (!body) return ErrorResponse(body.error());
  formats::ObjectReader reader(*body, "body");
  if (auto st = reader.status(); !st) return ErrorResponse(st.error());
  auto label = reader.RequiredString("device_group", kMaxNameBytes * 2 + 1);
  if (!label) return ErrorResponse(label.error());
  const Json* images_json = reader.Member("images");
  if (images_json == nullptr) {
    return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                               "body.images: missing field 'images' (a list of image IDs)"));
  }
  if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
  if (!images_json->is_array()) {
    return ErrorResponse(
        Error(ErrorCode::kInvalidArgument, "body.images: expected a list of image IDs"));
  }
  if (images_json->empty()) {
    return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                               "body.images: name at least one image (moat image list)"));
  }
  if (images_json->size() > kMaxImages) {
    return ErrorResponse(Error(ErrorCode::kLimitExceeded,
                               fmt::format("body.images: at most {} images", kMaxImages)));
  }
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (size_t i = 0; i < images_json->size(); ++i) {
    const Json& v = (*images_json)[i];
    if (!v.is_string() || !IsSha256Hex(v.get<std::string>())) {
      return ErrorResponse(
          Error(ErrorCode::kInvalidArgument,
                fmt::format("body.images[{}]: expected an image ID (64 lowercase hexadecimal "
                            "characters, as moat image list shows)",
                            i)));
    }
    if (!seen.insert(v.get<std::string>()).second) {
      return ErrorResponse(
          Error(ErrorCode::kInvalidArgument,
                fmt::format("body.images[{}]: image {} is listed twice", i, v.get<std::string>())));
    }
    ids.push_back(v.get<std::string>());
  }
  if (c.role < Role::kContributor) {
    return Forbidden(c, "deployment.create", *label,
                     "creating deployments needs the Contributor or Administrator role");
  }
  auto group = FindGroupByLabel(db_, c.tenant, *label, "body.device_group");
  if (!group) return ErrorResponse(group.error());

  // The images, all of this tenant's (another tenant's image is as unknown as a made-up ID).
  struct Image {
    std::string id, image_type, component_id, package_image_id, version, name, signer;
    int64_t size = 0;
  };
  std::vector<Image> images;
  images.reserve(ids.size());
  auto key_rows = db_.Query(
      "SELECT key_id, name, public_key_pem, revoked_at FROM image_signing_keys WHERE tenant_id = "
      "? ORDER BY key_id",
      {c.tenant.id});
  if (!key_rows) return ErrorResponse(key_rows.error());
  std::map<std::string, std::pair<std::string, bool>> keys;  // id -> (name, revoked)
  for (const auto& r : *key_rows) keys[*r.Text(0)] = {*r.Text(1), !r.IsNull(3)};
  std::map<std::string, std::string> by_component;  // component -> image id
  std::string os_image;
  for (const auto& id : ids) {
    auto row = db_.Query(
        "SELECT id, image_type, component_id, package_image_id, version, name, size_bytes, "
        "signer_key_id FROM images WHERE tenant_id = ? AND id = ?",
        {c.tenant.id, id});
    if (!row) return ErrorResponse(row.error());
    if (row->empty()) {
      return NotFound(
          fmt::format("no image {} in tenant '{}' (moat image list shows the "
                      "tenant's images; add one with moat image add)",
                      id, c.tenant.name));
    }
    const store::Row& r = (*row)[0];
    Image im{*r.Text(0), *r.Text(1), *r.Text(2), *r.Text(3),
             *r.Text(4), *r.Text(5), *r.Text(7), *r.Int(6)};
    if (auto [it, inserted] = by_component.emplace(im.component_id, im.id); !inserted) {
      return ErrorResponse(Error(
          ErrorCode::kInvalidArgument,
          fmt::format("images {} and {} are both for component {}; a deployment holds one image "
                      "per component",
                      it->second, im.id, im.component_id)));
    }
    if (im.image_type == "os") {
      if (!os_image.empty()) {
        return ErrorResponse(
            Error(ErrorCode::kInvalidArgument,
                  fmt::format("images {} and {} are both OS images; a device runs one OS, so a "
                              "deployment holds at most one",
                              os_image, im.id)));
      }
      os_image = im.id;
    } else if (group->app_update_policy == kNoThirdPartyAppUpdates) {
      return ErrorResponse(Error(
          ErrorCode::kFailedPrecondition,
          fmt::format("device group '{}' has the application-update policy {}: its devices take "
                      "no application images from the service, so image {} ('{}') cannot be "
                      "deployed to it (change the policy with moat device-group update --app-"
                      "update-policy update-all, or deploy to another group)",
                      group->Label(), kNoThirdPartyAppUpdates, im.id, im.name)));
    }
    auto key = keys.find(im.signer);
    if (key == keys.end() || key->second.second) {
      return ErrorResponse(
          Error(ErrorCode::kFailedPrecondition,
                fmt::format("image {} ('{}') was signed by image-signing key {}, which is revoked; "
                            "devices would refuse it (sign it again with an active key and add it)",
                            im.id, im.name,
                            key == keys.end() ? im.signer : "'" + key->second.first + "'")));
    }
    images.push_back(std::move(im));
  }

  // image-signing-keys.json: the tenant's unrevoked keys, under TUF's protection.
  Json key_list = Json::array();
  for (const auto& r : *key_rows) {
    if (!r.IsNull(3)) continue;
    key_list.push_back({{"id", *r.Text(0)}, {"name", *r.Text(1)}, {"public_key_pem", *r.Text(2)}});
  }
  const std::string keys_file = DumpJson(Json{{"keys", key_list}});
  std::map<std::string, tuf::TargetFile> targets;
  for (const auto& im : images) {
    tuf::TargetFile f;
    f.length = im.size;
    auto digest = HexDecode(im.id);
    if (!digest || digest->size() != f.sha256.size()) {
      return ErrorResponse(Error(ErrorCode::kInternal, "image ID is not a SHA-256: " + im.id));
    }
    std::copy(digest->begin(), digest->end(), f.sha256.begin());
    f.custom = {{"component_id", im.component_id},
                {"image_type", TargetImageType(im.image_type)},
                {"version", im.version},
                {"package_image_id", im.package_image_id},
                {"name", im.name}};
    targets[im.id + ".imagepackage"] = std::move(f);
  }
  const tuf::TargetFile keys_target = tuf::DescribeTarget(keys_file);
  targets["image-signing-keys.json"] = keys_target;
  const std::string keys_path = tuf::TargetPath("image-signing-keys.json", keys_target.sha256,
                                                /*consistent_snapshot=*/true);

  const std::string deployment_id = random_.NewUuid();
  int64_t targets_version = 0;
  auto published = repositories_.Update(
      group->id, c.now,
      [&](tuf::RepositoryWriter& w) -> Result<Repositories::Change> {
        MOAT_TRY(w.SetTargets(targets, c.now));
        Repositories::Change ch;
        ch.extra_files[keys_path] = keys_file;
        return ch;
      },
      [&](store::Session& s, const tuf::RepositoryWriter& w) -> Result<void> {
        targets_version = w.targets().version;
        MOAT_TRY(
            s.Execute("INSERT INTO deployments (id, tenant_id, device_group_id, targets_version, "
                      "image_count, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      {deployment_id, c.tenant.id, group->id, targets_version,
                       static_cast<int64_t>(images.size()), c.now_seconds, c.caller.name}));
        for (const auto& im : images) {
          MOAT_TRY(
              s.Execute("INSERT INTO deployment_images (deployment_id, device_group_id, "
                        "image_id) VALUES (?, ?, ?)",
                        {deployment_id, group->id, im.id}));
        }
        return AuditAs(s, c.now_seconds, &c.caller, c.tenant.id, "deployment.create",
                       group->Label(), "ok",
                       fmt::format("deployment {}: targets version {}, {} image(s)", deployment_id,
                                   targets_version, images.size()));
      });
  if (!published) return ErrorResponse(published.error());
  log::Info("tenant '{}': deployment {} to {} published as targets version {} ({} image(s))",
            c.tenant.name, deployment_id, group->Label(), targets_version, images.size());
  return Show(c, deployment_id, 201);
}

HttpResponse DeploymentApi::List(Context& c) {
  std::string sql = std::string(kDeploymentColumns) + "WHERE d.tenant_id = ? ";
  std::vector<store::Value> values;
  values.emplace_back(c.tenant.id);
  if (std::string label = QueryParam(c.req.query, "device_group"); !label.empty()) {
    auto group = FindGroupByLabel(db_, c.tenant, label, "device_group");
    if (!group) return ErrorResponse(group.error());
    sql += "AND d.device_group_id = ? ";
    values.emplace_back(group->id);
  }
  sql += "ORDER BY d.created_at DESC, d.targets_version DESC, d.id";
  auto rows = db_.Query(sql, values);
  if (!rows) return ErrorResponse(rows.error());
  Json list = Json::array();
  for (const auto& r : *rows) list.push_back(DeploymentJson(r));
  return JsonResponse(200, {{"tenant", c.tenant.name}, {"deployments", list}});
}

HttpResponse DeploymentApi::Show(Context& c, std::string_view id, int status) {
  auto row = db_.Query(std::string(kDeploymentColumns) + "WHERE d.tenant_id = ? AND d.id = ?",
                       {c.tenant.id, std::string(id)});
  if (!row) return ErrorResponse(row.error());
  if (row->empty()) {
    return NotFound(fmt::format("no deployment {} in tenant '{}'", formats::QuoteForMessage(id),
                                c.tenant.name));
  }
  Json j = DeploymentJson((*row)[0]);
  auto images = DeploymentImages(db_, c.tenant.id, id);
  if (!images) return ErrorResponse(images.error());
  j["images"] = std::move(*images);
  j["tenant"] = c.tenant.name;
  j["repository"] = fmt::format("/device/v1/repo/{}/", j["device_group_id"].get<std::string>());
  return JsonResponse(status, j);
}

HttpResponse DeploymentApi::RepositoryInfo(Context& c, std::string_view product,
                                           std::string_view group_name) {
  auto group = FindGroup(db_, c.tenant, product, group_name);
  if (!group) return ErrorResponse(group.error());
  if (auto e = repositories_.Ensure(group->id, c.now); !e) return ErrorResponse(e.error());
  auto row = db_.QueryOne(
      "SELECT root_version, targets_version, snapshot_version, timestamp_version, "
      "timestamp_expires, updated_at FROM tuf_repositories WHERE device_group_id = ?",
      {group->id});
  if (!row) return ErrorResponse(row.error());
  auto keys = db_.Query(
      "SELECT key_id, role, key_type, created_at, retired_at FROM tuf_keys WHERE "
      "device_group_id = ? ORDER BY created_at, role, key_id",
      {group->id});
  if (!keys) return ErrorResponse(keys.error());
  Json key_list = Json::array();
  for (const auto& k : *keys) {
    key_list.push_back({{"keyid", *k.Text(0)},
                        {"role", *k.Text(1)},
                        {"key_type", *k.Text(2)},
                        {"created_at", Time(*k.Int(3))},
                        {"retired_at", k.IsNull(4) ? Json(nullptr) : Json(Time(*k.Int(4)))}});
  }
  return JsonResponse(200, {{"tenant", c.tenant.name},
                            {"product", group->product},
                            {"device_group", group->name},
                            {"device_group_id", group->id},
                            {"repository", fmt::format("/device/v1/repo/{}/", group->id)},
                            {"root_version", *row->Int(0)},
                            {"targets_version", *row->Int(1)},
                            {"snapshot_version", *row->Int(2)},
                            {"timestamp_version", *row->Int(3)},
                            {"timestamp_expires", Time(*row->Int(4))},
                            {"updated_at", Time(*row->Int(5))},
                            {"keys", key_list}});
}

HttpResponse DeploymentApi::RotateRoot(Context& c, std::string_view product,
                                       std::string_view group_name) {
  const std::string target = std::string(product) + "/" + std::string(group_name);
  if (c.role != Role::kAdministrator) {
    return Forbidden(c, "device-group.rotate-root", target,
                     "rotating a device group's root key needs the Administrator role");
  }
  auto group = FindGroup(db_, c.tenant, product, group_name);
  if (!group) return ErrorResponse(group.error());
  std::string new_keyid;
  std::vector<std::string> retired;
  int64_t root_version = 0;
  auto rotated = repositories_.Update(
      group->id, c.now,
      [&](tuf::RepositoryWriter& w) -> Result<Repositories::Change> {
        MOAT_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
        Repositories::Change ch;
        ch.retired_keyids = w.root().root.keyids;
        new_keyid = tuf::Key::FromPublicKey(key.public_key()).keyid();
        MOAT_TRY(w.RotateKeys(tuf::Role::kRoot, {{key}}, c.now));
        ch.added_keys.emplace_back(tuf::Role::kRoot, std::move(key));
        retired = ch.retired_keyids;
        return ch;
      },
      [&](store::Session& s, const tuf::RepositoryWriter& w) -> Result<void> {
        root_version = w.root().version;
        std::string old_keys;
        for (const auto& k : retired) old_keys += (old_keys.empty() ? "" : ", ") + k;
        return AuditAs(s, c.now_seconds, &c.caller, c.tenant.id, "device-group.rotate-root", target,
                       "ok",
                       fmt::format("root version {} signed by the retired key(s) {} and the new "
                                   "key {}",
                                   root_version, old_keys, new_keyid));
      });
  if (!rotated) return ErrorResponse(rotated.error());
  return JsonResponse(200, {{"tenant", c.tenant.name},
                            {"product", group->product},
                            {"device_group", group->name},
                            {"device_group_id", group->id},
                            {"root_version", root_version},
                            {"new_root_keyid", new_keyid},
                            {"retired_root_keyids", retired}});
}

Result<Json> DeploymentStatusJson(store::Database& db, std::string_view tenant_id,
                                  std::string_view device_id) {
  const std::string id(device_id);
  auto device = db.Query(
      "SELECT d.device_group_id, g.name, p.name FROM devices d LEFT JOIN device_groups g ON g.id "
      "= d.device_group_id LEFT JOIN products p ON p.id = g.product_id WHERE d.id = ? AND "
      "d.tenant_id = ?",
      {id, std::string(tenant_id)});
  if (!device) return Fail(device.error());
  if (device->empty()) return Fail(ErrorCode::kNotFound, "no device {} in this tenant", id);
  const store::Row& d = (*device)[0];
  Json out = {{"device_id", id},
              {"product", d.IsNull(2) ? Json(nullptr) : Json(*d.Text(2))},
              {"device_group", d.IsNull(1) ? Json(nullptr) : Json(*d.Text(1))},
              {"deployment", nullptr},
              {"reported_at", nullptr},
              {"os", nullptr},
              {"running", Json::array()},
              {"last_update", nullptr}};

  // What the device reported.
  std::map<std::string, Json> installed_by_image;
  Json installed = Json::array();
  MOAT_ASSIGN_OR_RETURN(
      auto status,
      db.Query("SELECT reported_at, os_name, os_version, installed, running, last_update_result, "
               "last_update_at, last_update_detail, last_update_targets_version FROM "
               "device_status WHERE device_id = ?",
               {id}));
  if (!status.empty()) {
    const store::Row& s = status[0];
    out["reported_at"] = Time(*s.Int(0));
    out["os"] = {{"name", *s.Text(1)}, {"version", *s.Text(2)}};
    // Written by DeviceApi from a validated report, so it parses.
    auto inst = ParseJson(*s.Text(3), "installed");
    if (inst && inst->is_array()) installed = *inst;
    auto running = ParseJson(*s.Text(4), "running");
    if (running && running->is_array()) out["running"] = *running;
    out["last_update"] = {{"result", *s.Text(5)},
                          {"at", s.IsNull(6) ? Json(nullptr) : Json(Time(*s.Int(6)))},
                          {"detail", *s.Text(7)},
                          {"targets_version", s.IsNull(8) ? Json(nullptr) : Json(*s.Int(8))}};
  }
  for (const auto& i : installed) installed_by_image[i.value("image_id", "")] = i;

  // What the device is targeted with: the images of its group's newest deployment.
  std::set<std::string> targeted_ids;
  Json targeted = Json::array();
  if (!d.IsNull(0)) {
    MOAT_ASSIGN_OR_RETURN(
        auto latest,
        db.Query("SELECT id, targets_version, created_at, created_by FROM deployments WHERE "
                 "device_group_id = ? ORDER BY targets_version DESC LIMIT 1",
                 {*d.Text(0)}));
    if (!latest.empty()) {
      const std::string deployment_id = *latest[0].Text(0);
      out["deployment"] = {{"id", deployment_id},
                           {"targets_version", *latest[0].Int(1)},
                           {"created_at", Time(*latest[0].Int(2))},
                           {"created_by", *latest[0].Text(3)}};
      MOAT_ASSIGN_OR_RETURN(Json images, DeploymentImages(db, tenant_id, deployment_id));
      for (auto& im : images) {
        const std::string image_id = im["id"].get<std::string>();
        targeted_ids.insert(image_id);
        im["installed"] = installed_by_image.contains(image_id);
        targeted.push_back(std::move(im));
      }
    }
  }
  for (auto& i : installed) i["targeted"] = targeted_ids.contains(i.value("image_id", ""));
  out["targeted_images"] = std::move(targeted);
  out["installed_images"] = std::move(installed);
  if (out["deployment"].is_null() || out["reported_at"].is_null()) {
    out["up_to_date"] = nullptr;  // nothing targeted, or nothing reported yet
  } else {
    bool all = true;
    for (const auto& t : out["targeted_images"]) all = all && t["installed"].get<bool>();
    out["up_to_date"] = all;
  }
  return out;
}

}  // namespace moat::service
