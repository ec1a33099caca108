#include "service/fleet_api.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "formats/attestation.h"
#include "formats/image_package.h"
#include "formats/json_reader.h"
#include "service/http_util.h"

namespace moat::service {

struct FleetApi::Context {
  const net::HttpRequest& req;
  const Caller& caller;
  Tenant tenant;
  Role role = Role::kReader;
  int64_t now = 0;
};

namespace {

using net::HttpRequest;
using net::HttpResponse;

constexpr size_t kMaxDescriptionBytes = 256;

// The OS feeds and application-update policies a device group may have (named after Azure
// Sphere's: Retail / RetailEval, UpdateAll / No3rdPartyAppUpdates).
constexpr std::array<std::string_view, 2> kOsFeeds = {"Retail", "RetailEval"};
constexpr std::string_view kUpdateAll = "update-all";
constexpr std::string_view kNoThirdPartyAppUpdates = "no-third-party-app-updates";
constexpr std::array<std::string_view, 2> kAppUpdatePolicies = {kUpdateAll,
                                                                kNoThirdPartyAppUpdates};
constexpr std::array<std::string_view, 7> kDays = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

struct DefaultGroup {
  std::string_view name;
  std::string_view description;
  std::string_view app_update_policy;
};
// Every new product gets these, like Azure Sphere's defaults: developers' boards keep the apps
// they sideload, field test and production devices take every app update.
constexpr std::array<DefaultGroup, 3> kDefaultGroups = {{
    {"Development", "Development devices: no cloud app updates (apps are sideloaded)",
     kNoThirdPartyAppUpdates},
    {"Field Test", "Devices in field testing", kUpdateAll},
    {"Production", "Devices in production", kUpdateAll},
}};

HttpResponse NotFound(std::string message) {
  return ErrorResponse(Error(ErrorCode::kNotFound, std::move(message)));
}

// A "not found" from a store lookup becomes `what`; other errors pass through.
Error LookupError(const Error& e, std::string what) {
  return e.code() == ErrorCode::kNotFound ? Error(ErrorCode::kNotFound, std::move(what)) : e;
}

std::string Time(int64_t unix_seconds) {
  return FormatRfc3339(store::FromUnixSeconds(unix_seconds));
}

bool IsSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A free-text description: at most kMaxDescriptionBytes, no control characters.
Result<void> ValidateDescription(std::string_view path, std::string_view text) {
  if (text.size() > kMaxDescriptionBytes) {
    return Fail(ErrorCode::kInvalidArgument, "{}: at most {} bytes", path, kMaxDescriptionBytes);
  }
  if (formats::HasControlCharacter(text)) {
    return Fail(ErrorCode::kInvalidArgument, "{}: must not hold control characters", path);
  }
  return Ok();
}

// For PATCH bodies: the string member `key`, or nullopt when it is absent.
Result<std::optional<std::string>> PatchString(formats::ObjectReader& r, std::string_view key,
                                               size_t max_bytes) {
  const Json* m = r.Member(key);
  if (m == nullptr) return std::optional<std::string>();
  MOAT_TRY(formats::ExpectType(*m, Json::value_t::string, r.PathOf(key)));
  std::string v = m->get<std::string>();
  if (v.size() > max_bytes) {
    return Fail(ErrorCode::kInvalidArgument, "{}: at most {} bytes", r.PathOf(key), max_bytes);
  }
  return std::optional<std::string>(std::move(v));
}

template <size_t N>
Result<void> CheckOneOf(std::string_view path, std::string_view value,
                        const std::array<std::string_view, N>& allowed) {
  for (auto a : allowed) {
    if (value == a) return Ok();
  }
  std::string list;
  for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  return Fail(ErrorCode::kInvalidArgument, "{}: {} is not one of {}", path,
              formats::QuoteForMessage(value), list);
}

// When a device group's devices may install updates, in device-local time: on `days` (bit 0
// Monday .. bit 6 Sunday), from start_hour:00 to end_hour:00.
struct UpdateWindow {
  int64_t days = 0;
  int64_t start_hour = 0;
  int64_t end_hour = 0;
};

// {"days":["Sat","Sun"],"start_hour":2,"end_hour":5}; JSON null means no window.
Result<std::optional<UpdateWindow>> ParseUpdateWindow(const Json& j, std::string_view path) {
  if (j.is_null()) return std::optional<UpdateWindow>();
  formats::ObjectReader r(j, path);
  MOAT_TRY(r.status());
  UpdateWindow w;
  const Json* days = r.Member("days");
  if (days == nullptr) {
    return Fail(ErrorCode::kInvalidArgument, "{}: missing field 'days'", r.PathOf("days"));
  }
  MOAT_TRY(formats::ExpectType(*days, Json::value_t::array, r.PathOf("days")));
  if (days->empty()) {
    return Fail(ErrorCode::kInvalidArgument, "{}: name at least one day (Mon..Sun)",
                r.PathOf("days"));
  }
  if (days->size() > kDays.size()) {
    return Fail(ErrorCode::kInvalidArgument, "{}: at most 7 days", r.PathOf("days"));
  }
  for (size_t i = 0; i < days->size(); ++i) {
    const std::string item_path = fmt::format("{}[{}]", r.PathOf("days"), i);
    MOAT_TRY(formats::ExpectType((*days)[i], Json::value_t::string, item_path));
    const std::string day = (*days)[i].get<std::string>();
    size_t d = 0;
    while (d < kDays.size() &&
           !(day.size() == 3 &&
             std::equal(day.begin(), day.end(), kDays[d].begin(),
                        [](char a, char b) { return std::tolower(a) == std::tolower(b); }))) {
      ++d;
    }
    if (d == kDays.size()) {
      return Fail(ErrorCode::kInvalidArgument, "{}: {} is not a day (Mon, Tue, ... Sun)", item_path,
                  formats::QuoteForMessage(day));
    }
    if ((w.days & (int64_t{1} << d)) != 0) {
      return Fail(ErrorCode::kInvalidArgument, "{}: {} is listed twice", item_path, kDays[d]);
    }
    w.days |= int64_t{1} << d;
  }
  MOAT_ASSIGN_OR_RETURN(w.start_hour, r.RequiredInt("start_hour", 0, 23));
  MOAT_ASSIGN_OR_RETURN(w.end_hour, r.RequiredInt("end_hour", 1, 24));
  if (w.end_hour <= w.start_hour) {
    return Fail(ErrorCode::kInvalidArgument,
                "{}: end_hour ({}) must be after start_hour ({}); a window ends on the day it "
                "starts",
                path, w.end_hour, w.start_hour);
  }
  MOAT_TRY(r.NoOtherFields());
  return std::optional<UpdateWindow>(w);
}

Json UpdateWindowJson(const store::Row& r, size_t days_col) {
  if (r.IsNull(days_col)) return nullptr;
  const int64_t mask = *r.Int(days_col);
  Json days = Json::array();
  for (size_t d = 0; d < kDays.size(); ++d) {
    if ((mask & (int64_t{1} << d)) != 0) days.push_back(kDays[d]);
  }
  const int64_t start = *r.Int(days_col + 1), end = *r.Int(days_col + 2);
  std::string text;
  for (const auto& d : days) text += (text.empty() ? "" : ",") + d.get<std::string>();
  return {{"days", days},
          {"start_hour", start},
          {"end_hour", end},
          {"summary", fmt::format("{} {:02}:00-{:02}:00 device-local time", text, start, end)}};
}

// The update_days, update_start_hour and update_end_hour values of `w`.
void AppendWindowValues(std::vector<store::Value>& values, const std::optional<UpdateWindow>& w) {
  for (int64_t v : {w ? w->days : 0, w ? w->start_hour : 0, w ? w->end_hour : 0}) {
    if (w) {
      values.emplace_back(v);
    } else {
      values.emplace_back(store::kNull);
    }
  }
}

// Device group rows: these columns, then the device count.
constexpr std::string_view kGroupColumns =
    "SELECT g.id, g.name, g.description, g.os_feed, g.app_update_policy, g.update_days, "
    "g.update_start_hour, g.update_end_hour, g.created_at, "
    "(SELECT count(*) FROM devices d WHERE d.device_group_id = g.id) FROM device_groups g ";

Json GroupJson(const store::Row& r, std::string_view product) {
  return {{"id", *r.Text(0)},
          {"product", product},
          {"name", *r.Text(1)},
          {"description", *r.Text(2)},
          {"os_feed", *r.Text(3)},
          {"app_update_policy", *r.Text(4)},
          {"update_window", UpdateWindowJson(r, 5)},
          {"created_at", Time(*r.Int(8))},
          {"device_count", *r.Int(9)}};
}

constexpr std::string_view kProductColumns =
    "SELECT p.id, p.name, p.description, p.created_at, p.created_by, "
    "(SELECT count(*) FROM devices d JOIN device_groups g ON g.id = d.device_group_id "
    "WHERE g.product_id = p.id) FROM products p ";

Json ProductJson(const store::Row& r) {
  return {{"id", *r.Text(0)},          {"name", *r.Text(1)},
          {"description", *r.Text(2)}, {"created_at", Time(*r.Int(3))},
          {"created_by", *r.Text(4)},  {"device_count", *r.Int(5)}};
}

// The ID of the product `name` in `tenant`, within a transaction or outside one.
template <typename Db>
Result<std::string> ProductId(Db& db, const Tenant& tenant, std::string_view name) {
  auto row = db.QueryOne("SELECT id FROM products WHERE tenant_id = ? AND name = ?",
                         {tenant.id, std::string(name)});
  if (!row) {
    return Fail(LookupError(row.error(), fmt::format("no product {} in tenant '{}'",
                                                     formats::QuoteForMessage(name), tenant.name)));
  }
  return row->Text(0);
}

template <typename Db>
Result<std::string> GroupId(Db& db, const Tenant& tenant, std::string_view product,
                            std::string_view group) {
  MOAT_ASSIGN_OR_RETURN(std::string product_id, ProductId(db, tenant, product));
  auto row = db.QueryOne("SELECT id FROM device_groups WHERE product_id = ? AND name = ?",
                         {product_id, std::string(group)});
  if (!row) {
    return Fail(LookupError(row.error(), fmt::format("no device group {} in product {}",
                                                     formats::QuoteForMessage(group),
                                                     formats::QuoteForMessage(product))));
  }
  return row->Text(0);
}

constexpr std::string_view kKeyColumns =
    "SELECT key_id, name, algorithm, public_key_pem, created_at, created_by, revoked_at "
    "FROM image_signing_keys ";

Json KeyJson(const store::Row& r) {
  return {{"id", *r.Text(0)},
          {"name", *r.Text(1)},
          {"algorithm", *r.Text(2)},
          {"public_key", *r.Text(3)},
          {"created_at", Time(*r.Int(4))},
          {"created_by", *r.Text(5)},
          {"revoked_at", r.IsNull(6) ? Json(nullptr) : Json(Time(*r.Int(6)))},
          {"status", r.IsNull(6) ? "active" : "revoked"}};
}

constexpr std::string_view kImageColumns =
    "SELECT i.id, i.image_type, i.component_id, i.package_image_id, i.version, i.name, "
    "i.size_bytes, i.signer_key_id, k.name, i.created_at, i.created_by "
    "FROM images i JOIN image_signing_keys k "
    "ON k.tenant_id = i.tenant_id AND k.key_id = i.signer_key_id ";

Json ImageJson(const store::Row& r) {
  return {{"id", *r.Text(0)},
          {"image_type", *r.Text(1)},
          {"component_id", *r.Text(2)},
          {"package_image_id", *r.Text(3)},
          {"version", *r.Text(4)},
          {"name", *r.Text(5)},
          {"size", *r.Int(6)},
          {"signer_key_id", *r.Text(7)},
          {"signer_key_name", *r.Text(8)},
          {"created_at", Time(*r.Int(9))},
          {"created_by", *r.Text(10)}};
}

}  // namespace

FleetApi::FleetApi(store::Database& db, const Clock& clock, Random& random,
                   std::filesystem::path image_dir, Repositories& repositories)
    : db_(db),
      clock_(clock),
      random_(random),
      image_dir_(std::move(image_dir)),
      repositories_(repositories) {}

bool FleetApi::Routes(const HttpRequest& req, std::span<const std::string_view> seg) {
  if (seg.size() < 5 || seg[2] != "tenants") return false;
  if (seg[4] == "products" || seg[4] == "image-signing-keys" || seg[4] == "images") return true;
  return seg[4] == "devices" && seg.size() == 6 && req.method == "PATCH";
}

HttpResponse FleetApi::Forbidden(Context& c, std::string_view action, std::string_view target,
                                 std::string_view why) {
  auto r = db_.Transact([&](store::Session& s) -> Result<void> {
    return AuditAs(s, c.now, &c.caller, c.tenant.id, action, target, "denied", why);
  });
  if (!r) log::Error("audit log write failed: {}", r.error().message());
  return ErrorResponse(Error(ErrorCode::kPermissionDenied, std::string(why)));
}

HttpResponse FleetApi::Handle(const HttpRequest& req, const Caller& caller,
                              std::span<const std::string_view> seg) {
  auto tenant = FindCallersTenant(db_, caller, seg[3]);
  if (!tenant) return ErrorResponse(tenant.error());
  Context c{.req = req,
            .caller = caller,
            .tenant = *tenant,
            .role = *caller.RoleIn(tenant->id),
            .now = store::UnixSeconds(clock_.Now())};
  if (seg[4] == "products") {
    if (seg.size() >= 7 && seg[6] == "device-groups") return DeviceGroups(c, seg);
    return Products(c, seg);
  }
  if (seg[4] == "devices") return MoveDevice(c, seg[5]);
  if (seg[4] == "image-signing-keys") return SigningKeys(c, seg);
  return Images(c, seg);
}

// /api/v1/tenants/{t}/products[/{product}]
HttpResponse FleetApi::Products(Context& c, std::span<const std::string_view> seg) {
  const HttpRequest& req = c.req;
  if (seg.size() == 5) {
    if (req.method == "GET") {
      auto rows = db_.Query(std::string(kProductColumns) + "WHERE p.tenant_id = ? ORDER BY p.name",
                            {c.tenant.id});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) list.push_back(ProductJson(r));
      return JsonResponse(200, {{"tenant", c.tenant.name}, {"products", list}});
    }
    if (req.method != "POST") return MethodNotAllowed(req);
    auto body = ParseBody(req);
    if (!body) return ErrorResponse(body.error());
    formats::ObjectReader reader(*body, "body");
    auto name = reader.RequiredString("name", kMaxNameBytes * 2);
    auto description = reader.OptionalString("description", kMaxDescriptionBytes * 2);
    for (const Result<std::string>* r : {&name, &description}) {
      if (!*r) return ErrorResponse(r->error());
    }
    if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
    if (auto v = ValidateName("product", *name); !v) return ErrorResponse(v.error());
    if (auto v = ValidateDescription("body.description", *description); !v) {
      return ErrorResponse(v.error());
    }
    if (c.role < Role::kContributor) {
      return Forbidden(c, "product.create", *name,
                       "creating products needs the Contributor or Administrator role");
    }
    const std::string id = random_.NewUuid();
    std::vector<std::string> group_ids;
    // Each group's repository is signed here, outside the transaction that stores it.
    std::vector<Repositories::Prepared> repositories;
    for (size_t i = 0; i < kDefaultGroups.size(); ++i) {
      group_ids.push_back(random_.NewUuid());
      auto prepared = repositories_.Prepare(group_ids.back(), store::FromUnixSeconds(c.now));
      if (!prepared) return ErrorResponse(prepared.error());
      repositories.push_back(std::move(*prepared));
    }
    auto created = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(
          int64_t n,
          s.Execute(
              "INSERT INTO products (id, tenant_id, name, description, created_at, "
              "created_by) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, name) DO NOTHING",
              {id, c.tenant.id, *name, *description, c.now, c.caller.name}));
      if (n == 0) {
        return Fail(ErrorCode::kAlreadyExists, "tenant '{}' already has a product named '{}'",
                    c.tenant.name, *name);
      }
      for (size_t i = 0; i < kDefaultGroups.size(); ++i) {
        const DefaultGroup& g = kDefaultGroups[i];
        MOAT_TRY(s.Execute(
            "INSERT INTO device_groups (id, product_id, name, description, os_feed, "
            "app_update_policy, update_days, update_start_hour, update_end_hour, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            {group_ids[i], id, std::string(g.name), std::string(g.description),
             std::string(kOsFeeds[0]), std::string(g.app_update_policy), store::kNull, store::kNull,
             store::kNull, c.now}));
        MOAT_TRY(Repositories::Store(s, repositories[i], c.now));
      }
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "product.create", *name, "ok",
                     "with device groups Development, Field Test, Production");
    });
    if (!created) return ErrorResponse(created.error());
    Json groups = Json::array();
    for (const auto& g : kDefaultGroups) groups.push_back(g.name);
    return JsonResponse(
        201,
        {{"id", id}, {"name", *name}, {"description", *description}, {"device_groups", groups}});
  }
  if (seg.size() != 6) {
    return NotFound(
        fmt::format("no endpoint {} {}", req.method.substr(0, 16), req.path.substr(0, 128)));
  }
  auto product = DecodePathSegment(seg[5]);
  if (!product) return ErrorResponse(product.error());
  auto not_found = [&] {
    return NotFound(fmt::format("no product {} in tenant '{}'", formats::QuoteForMessage(*product),
                                c.tenant.name));
  };
  if (req.method == "GET") {
    auto row = db_.QueryOne(std::string(kProductColumns) + "WHERE p.tenant_id = ? AND p.name = ?",
                            {c.tenant.id, *product});
    if (!row) {
      return row.error().code() == ErrorCode::kNotFound ? not_found() : ErrorResponse(row.error());
    }
    Json j = ProductJson(*row);
    auto groups = db_.Query(std::string(kGroupColumns) + "WHERE g.product_id = ? ORDER BY g.name",
                            {j["id"].get<std::string>()});
    if (!groups) return ErrorResponse(groups.error());
    j["device_groups"] = Json::array();
    for (const auto& g : *groups) j["device_groups"].push_back(GroupJson(g, *product));
    j["tenant"] = c.tenant.name;
    return JsonResponse(200, j);
  }
  if (req.method == "PATCH") {
    auto body = ParseBody(req);
    if (!body) return ErrorResponse(body.error());
    formats::ObjectReader reader(*body, "body");
    if (auto st = reader.status(); !st) return ErrorResponse(st.error());
    auto new_name = PatchString(reader, "name", kMaxNameBytes * 2);
    auto description = PatchString(reader, "description", kMaxDescriptionBytes * 2);
    for (const auto* r : {&new_name, &description}) {
      if (!*r) return ErrorResponse(r->error());
    }
    if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
    if (*new_name) {
      if (auto v = ValidateName("product", **new_name); !v) return ErrorResponse(v.error());
    }
    if (*description) {
      if (auto v = ValidateDescription("body.description", **description); !v) {
        return ErrorResponse(v.error());
      }
    }
    if (c.role < Role::kContributor) {
      return Forbidden(c, "product.update", *product,
                       "changing products needs the Contributor or Administrator role");
    }
    const std::string final_name = new_name->value_or(*product);
    auto updated = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string id, ProductId(s, c.tenant, *product));
      if (final_name != *product) {
        // Writers are serialised, so this check and the update see the same state.
        auto taken = s.Query("SELECT 1 FROM products WHERE tenant_id = ? AND name = ?",
                             {c.tenant.id, final_name});
        if (!taken) return Fail(taken.error());
        if (!taken->empty()) {
          return Fail(ErrorCode::kAlreadyExists, "tenant '{}' already has a product named '{}'",
                      c.tenant.name, final_name);
        }
        MOAT_TRY(s.Execute("UPDATE products SET name = ? WHERE id = ?", {final_name, id}));
      }
      if (*description) {
        MOAT_TRY(
            s.Execute("UPDATE products SET description = ? WHERE id = ?", {**description, id}));
      }
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "product.update", *product, "ok",
                     final_name != *product ? fmt::format("renamed to '{}'", final_name) : "");
    });
    if (!updated) return ErrorResponse(updated.error());
    auto row = db_.QueryOne(std::string(kProductColumns) + "WHERE p.tenant_id = ? AND p.name = ?",
                            {c.tenant.id, final_name});
    if (!row) return ErrorResponse(row.error());
    return JsonResponse(200, ProductJson(*row));
  }
  if (req.method == "DELETE") {
    if (c.role != Role::kAdministrator) {
      return Forbidden(c, "product.delete", *product,
                       "deleting products needs the Administrator role");
    }
    auto deleted = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string id, ProductId(s, c.tenant, *product));
      MOAT_ASSIGN_OR_RETURN(store::Row count,
                            s.QueryOne("SELECT count(*) FROM devices d JOIN device_groups g ON "
                                       "g.id = d.device_group_id WHERE g.product_id = ?",
                                       {id}));
      MOAT_ASSIGN_OR_RETURN(int64_t devices, count.Int(0));
      if (devices > 0) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "product '{}' still has {} device(s) in its device groups; move them to "
                    "another product's group first (moat device update ID --device-group "
                    "PRODUCT/GROUP)",
                    *product, devices);
      }
      MOAT_ASSIGN_OR_RETURN(auto groups,
                            s.Query("SELECT id FROM device_groups WHERE product_id = ?", {id}));
      for (const auto& g : groups) {
        MOAT_ASSIGN_OR_RETURN(std::string group_id, g.Text(0));
        MOAT_TRY(Repositories::DeleteForGroup(s, group_id));
      }
      MOAT_TRY(s.Execute("DELETE FROM device_groups WHERE product_id = ?", {id}));
      MOAT_TRY(s.Execute("DELETE FROM products WHERE id = ?", {id}));
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "product.delete", *product, "ok", "");
    });
    if (!deleted) return ErrorResponse(deleted.error());
    return JsonResponse(200, {{"name", *product}, {"deleted", true}});
  }
  return MethodNotAllowed(req);
}

// /api/v1/tenants/{t}/products/{product}/device-groups[/{group}]
HttpResponse FleetApi::DeviceGroups(Context& c, std::span<const std::string_view> seg) {
  const HttpRequest& req = c.req;
  if (seg.size() > 8) {
    return NotFound(
        fmt::format("no endpoint {} {}", req.method.substr(0, 16), req.path.substr(0, 128)));
  }
  auto product = DecodePathSegment(seg[5]);
  if (!product) return ErrorResponse(product.error());
  std::optional<std::string> group;
  if (seg.size() == 8) {
    auto g = DecodePathSegment(seg[7]);
    if (!g) return ErrorResponse(g.error());
    group = *g;
  }
  const std::string target = *product + "/" + group.value_or("");

  // The settings of a POST (all optional but the name) or a PATCH (all optional).
  struct Settings {
    std::optional<std::string> name, description, os_feed, app_update_policy;
    bool window_given = false;
    std::optional<UpdateWindow> window;
  };
  auto read_settings = [&](bool create) -> Result<Settings> {
    MOAT_ASSIGN_OR_RETURN(Json body, ParseBody(req));
    formats::ObjectReader r(body, "body");
    MOAT_TRY(r.status());
    Settings out;
    MOAT_ASSIGN_OR_RETURN(out.name, PatchString(r, "name", kMaxNameBytes * 2));
    if (create && !out.name) {
      return Fail(ErrorCode::kInvalidArgument, "body.name: missing field 'name'");
    }
    MOAT_ASSIGN_OR_RETURN(out.description, PatchString(r, "description", kMaxDescriptionBytes * 2));
    MOAT_ASSIGN_OR_RETURN(out.os_feed, PatchString(r, "os_feed", 32));
    MOAT_ASSIGN_OR_RETURN(out.app_update_policy, PatchString(r, "app_update_policy", 64));
    if (const Json* w = r.Member("update_window")) {
      out.window_given = true;
      MOAT_ASSIGN_OR_RETURN(out.window, ParseUpdateWindow(*w, r.PathOf("update_window")));
    }
    MOAT_TRY(r.NoOtherFields());
    if (out.name) MOAT_TRY(ValidateName("device group", *out.name));
    if (out.description) MOAT_TRY(ValidateDescription("body.description", *out.description));
    if (out.os_feed) MOAT_TRY(CheckOneOf("body.os_feed", *out.os_feed, kOsFeeds));
    if (out.app_update_policy) {
      MOAT_TRY(CheckOneOf("body.app_update_policy", *out.app_update_policy, kAppUpdatePolicies));
    }
    return out;
  };
  auto show = [&](std::string_view name, int status) {
    auto id = ProductId(db_, c.tenant, *product);
    if (!id) return ErrorResponse(id.error());
    auto row = db_.QueryOne(std::string(kGroupColumns) + "WHERE g.product_id = ? AND g.name = ?",
                            {*id, std::string(name)});
    if (!row) {
      return ErrorResponse(LookupError(
          row.error(),
          fmt::format("no device group {} in product {}", formats::QuoteForMessage(name),
                      formats::QuoteForMessage(*product))));
    }
    Json j = GroupJson(*row, *product);
    j["tenant"] = c.tenant.name;
    return JsonResponse(status, j);
  };

  if (!group) {
    if (req.method == "GET") {
      auto id = ProductId(db_, c.tenant, *product);
      if (!id) return ErrorResponse(id.error());
      auto rows =
          db_.Query(std::string(kGroupColumns) + "WHERE g.product_id = ? ORDER BY g.name", {*id});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) list.push_back(GroupJson(r, *product));
      return JsonResponse(
          200, {{"tenant", c.tenant.name}, {"product", *product}, {"device_groups", list}});
    }
    if (req.method != "POST") return MethodNotAllowed(req);
    auto settings = read_settings(/*create=*/true);
    if (!settings) return ErrorResponse(settings.error());
    if (c.role < Role::kContributor) {
      return Forbidden(c, "device-group.create", *product + "/" + *settings->name,
                       "creating device groups needs the Contributor or Administrator role");
    }
    const std::string id = random_.NewUuid();
    auto repository = repositories_.Prepare(id, store::FromUnixSeconds(c.now));
    if (!repository) return ErrorResponse(repository.error());
    auto created = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string product_id, ProductId(s, c.tenant, *product));
      std::vector<store::Value> values;
      values.reserve(10);
      values.emplace_back(id);
      values.emplace_back(product_id);
      values.emplace_back(*settings->name);
      values.emplace_back(settings->description.value_or(""));
      values.emplace_back(settings->os_feed.value_or(std::string(kOsFeeds[0])));
      values.emplace_back(settings->app_update_policy.value_or(std::string(kUpdateAll)));
      AppendWindowValues(values, settings->window);
      values.emplace_back(c.now);
      MOAT_ASSIGN_OR_RETURN(
          int64_t n,
          s.Execute("INSERT INTO device_groups (id, product_id, name, description, os_feed, "
                    "app_update_policy, update_days, update_start_hour, update_end_hour, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (product_id, name) DO NOTHING",
                    values));
      if (n == 0) {
        return Fail(ErrorCode::kAlreadyExists, "product '{}' already has a device group named '{}'",
                    *product, *settings->name);
      }
      MOAT_TRY(Repositories::Store(s, *repository, c.now));
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "device-group.create",
                     *product + "/" + *settings->name, "ok", "");
    });
    if (!created) return ErrorResponse(created.error());
    return show(*settings->name, 201);
  }

  if (req.method == "GET") return show(*group, 200);
  if (req.method == "PATCH") {
    auto settings = read_settings(/*create=*/false);
    if (!settings) return ErrorResponse(settings.error());
    if (c.role < Role::kContributor) {
      return Forbidden(c, "device-group.update", target,
                       "changing device groups needs the Contributor or Administrator role");
    }
    const std::string final_name = settings->name.value_or(*group);
    auto updated = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string product_id, ProductId(s, c.tenant, *product));
      MOAT_ASSIGN_OR_RETURN(std::string id, GroupId(s, c.tenant, *product, *group));
      if (final_name != *group) {
        auto taken = s.Query("SELECT 1 FROM device_groups WHERE product_id = ? AND name = ?",
                             {product_id, final_name});
        if (!taken) return Fail(taken.error());
        if (!taken->empty()) {
          return Fail(ErrorCode::kAlreadyExists,
                      "product '{}' already has a device group named '{}'", *product, final_name);
        }
        MOAT_TRY(s.Execute("UPDATE device_groups SET name = ? WHERE id = ?", {final_name, id}));
      }
      std::vector<std::string> changes;
      if (settings->description) {
        MOAT_TRY(s.Execute("UPDATE device_groups SET description = ? WHERE id = ?",
                           {*settings->description, id}));
      }
      if (settings->os_feed) {
        MOAT_TRY(s.Execute("UPDATE device_groups SET os_feed = ? WHERE id = ?",
                           {*settings->os_feed, id}));
        changes.push_back("os_feed " + *settings->os_feed);
      }
      if (settings->app_update_policy) {
        MOAT_TRY(s.Execute("UPDATE device_groups SET app_update_policy = ? WHERE id = ?",
                           {*settings->app_update_policy, id}));
        changes.push_back("app_update_policy " + *settings->app_update_policy);
      }
      if (settings->window_given) {
        std::vector<store::Value> values;
        values.reserve(4);
        AppendWindowValues(values, settings->window);
        values.emplace_back(id);
        MOAT_TRY(
            s.Execute("UPDATE device_groups SET update_days = ?, update_start_hour = ?, "
                      "update_end_hour = ? WHERE id = ?",
                      values));
        changes.push_back(settings->window ? "update window set" : "update window removed");
      }
      if (final_name != *group) changes.push_back("renamed to '" + final_name + "'");
      std::string detail;
      for (const auto& ch : changes) detail += (detail.empty() ? "" : "; ") + ch;
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "device-group.update", target, "ok", detail);
    });
    if (!updated) return ErrorResponse(updated.error());
    return show(final_name, 200);
  }
  if (req.method == "DELETE") {
    if (c.role != Role::kAdministrator) {
      return Forbidden(c, "device-group.delete", target,
                       "deleting device groups needs the Administrator role");
    }
    auto deleted = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string id, GroupId(s, c.tenant, *product, *group));
      MOAT_ASSIGN_OR_RETURN(
          store::Row count,
          s.QueryOne("SELECT count(*) FROM devices WHERE device_group_id = ?", {id}));
      MOAT_ASSIGN_OR_RETURN(int64_t devices, count.Int(0));
      if (devices > 0) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "device group '{}' still has {} device(s); move them to another group first "
                    "(moat device update ID --device-group PRODUCT/GROUP)",
                    target, devices);
      }
      MOAT_TRY(Repositories::DeleteForGroup(s, id));
      MOAT_TRY(s.Execute("DELETE FROM device_groups WHERE id = ?", {id}));
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "device-group.delete", target, "ok", "");
    });
    if (!deleted) return ErrorResponse(deleted.error());
    return JsonResponse(200, {{"product", *product}, {"name", *group}, {"deleted", true}});
  }
  return MethodNotAllowed(req);
}

// PATCH /api/v1/tenants/{t}/devices/{id} {"device_group": "PRODUCT/GROUP" | null}
HttpResponse FleetApi::MoveDevice(Context& c, std::string_view device_id_segment) {
  const std::string device_id(device_id_segment);
  if (auto v = formats::ValidateDeviceId(device_id); !v) return ErrorResponse(v.error());
  auto body = ParseBody(c.req);
  if (!body) return ErrorResponse(body.error());
  formats::ObjectReader reader(*body, "body");
  if (auto st = reader.status(); !st) return ErrorResponse(st.error());
  const Json* group_json = reader.Member("device_group");
  if (group_json == nullptr) {
    return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                               "body.device_group: missing field 'device_group' (\"PRODUCT/GROUP\" "
                               "or null)"));
  }
  if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
  std::optional<std::pair<std::string, std::string>> destination;
  if (!group_json->is_null()) {
    if (!group_json->is_string()) {
      return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                 "body.device_group: expected \"PRODUCT/GROUP\" or null"));
    }
    const std::string text = group_json->get<std::string>();
    const size_t slash = text.find('/');
    if (slash == std::string::npos) {
      return ErrorResponse(
          Error(ErrorCode::kInvalidArgument,
                fmt::format("body.device_group: {} is not PRODUCT/GROUP (e.g. \"Thermostat/Field "
                            "Test\")",
                            formats::QuoteForMessage(text))));
    }
    destination.emplace(text.substr(0, slash), text.substr(slash + 1));
    if (auto v = ValidateName("product", destination->first); !v) return ErrorResponse(v.error());
    if (auto v = ValidateName("device group", destination->second); !v) {
      return ErrorResponse(v.error());
    }
  }
  const std::string where =
      destination ? destination->first + "/" + destination->second : std::string("(none)");
  if (c.role < Role::kContributor) {
    return Forbidden(c, "device.move", device_id,
                     "moving devices between device groups needs the Contributor or "
                     "Administrator role");
  }
  auto moved = db_.Transact([&](store::Session& s) -> Result<void> {
    auto row = s.QueryOne("SELECT 1 FROM devices WHERE id = ? AND tenant_id = ?",
                          {device_id, c.tenant.id});
    if (!row) {
      return Fail(LookupError(
          row.error(), fmt::format("no device {} in tenant '{}'", device_id, c.tenant.name)));
    }
    store::Value group_id = store::kNull;
    if (destination) {
      MOAT_ASSIGN_OR_RETURN(std::string id,
                            GroupId(s, c.tenant, destination->first, destination->second));
      group_id = id;
    }
    MOAT_TRY(
        s.Execute("UPDATE devices SET device_group_id = ? WHERE id = ?", {group_id, device_id}));
    return AuditAs(s, c.now, &c.caller, c.tenant.id, "device.move", device_id, "ok",
                   "to device group " + where);
  });
  if (!moved) return ErrorResponse(moved.error());
  return JsonResponse(200,
                      {{"id", device_id},
                       {"tenant", c.tenant.name},
                       {"product", destination ? Json(destination->first) : Json(nullptr)},
                       {"device_group", destination ? Json(destination->second) : Json(nullptr)}});
}

// /api/v1/tenants/{t}/image-signing-keys[/{id-or-name}[/revoke]]
HttpResponse FleetApi::SigningKeys(Context& c, std::span<const std::string_view> seg) {
  const HttpRequest& req = c.req;
  if (seg.size() == 5) {
    if (req.method == "GET") {
      auto rows =
          db_.Query(std::string(kKeyColumns) + "WHERE tenant_id = ? ORDER BY name", {c.tenant.id});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) list.push_back(KeyJson(r));
      return JsonResponse(200, {{"tenant", c.tenant.name}, {"image_signing_keys", list}});
    }
    if (req.method != "POST") return MethodNotAllowed(req);
    auto body = ParseBody(req);
    if (!body) return ErrorResponse(body.error());
    formats::ObjectReader reader(*body, "body");
    auto pem = reader.RequiredString("public_key", 8 * 1024);
    auto name = reader.OptionalString("name", kMaxNameBytes * 2);
    for (const Result<std::string>* r : {&pem, &name}) {
      if (!*r) return ErrorResponse(r->error());
    }
    if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
    // The image package format signs with ECDSA P-256 or Ed25519 (the only KeyTypes there are),
    // identified by the SHA-256 of the SubjectPublicKeyInfo.
    auto key = crypto::PublicKey::FromPem(*pem);
    if (!key) return ErrorResponse(key.error().WithContext("body.public_key"));
    const std::string key_id = key->FingerprintHex();
    std::string key_name = name->empty() ? "key-" + key_id.substr(0, 12) : *name;
    if (auto v = ValidateName("image-signing key", key_name); !v) return ErrorResponse(v.error());
    if (c.role != Role::kAdministrator) {
      return Forbidden(c, "image-signing-key.add", key_id,
                       "adding image-signing keys needs the Administrator role (a key decides "
                       "which images the tenant accepts)");
    }
    auto added = db_.Transact([&](store::Session& s) -> Result<void> {
      auto same_name =
          s.Query("SELECT key_id FROM image_signing_keys WHERE tenant_id = ? AND name = ?",
                  {c.tenant.id, key_name});
      if (!same_name) return Fail(same_name.error());
      if (!same_name->empty() && *(*same_name)[0].Text(0) != key_id) {
        return Fail(ErrorCode::kAlreadyExists,
                    "tenant '{}' already has an image-signing key named '{}'", c.tenant.name,
                    key_name);
      }
      MOAT_ASSIGN_OR_RETURN(
          int64_t n,
          s.Execute("INSERT INTO image_signing_keys (tenant_id, key_id, name, algorithm, "
                    "public_key_pem, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tenant_id, key_id) DO NOTHING",
                    {c.tenant.id, key_id, key_name, std::string(crypto::KeyTypeName(key->type())),
                     key->ToPem(), c.now, c.caller.name}));
      if (n == 0) {
        return Fail(ErrorCode::kAlreadyExists,
                    "tenant '{}' already has the image-signing key {} (a revoked key cannot be "
                    "added again)",
                    c.tenant.name, key_id);
      }
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "image-signing-key.add", key_id, "ok",
                     fmt::format("'{}' ({})", key_name, crypto::KeyTypeName(key->type())));
    });
    if (!added) return ErrorResponse(added.error());
    return JsonResponse(201, {{"id", key_id},
                              {"name", key_name},
                              {"algorithm", crypto::KeyTypeName(key->type())},
                              {"tenant", c.tenant.name}});
  }
  if (seg.size() != 7 || seg[6] != "revoke") {
    return NotFound(
        fmt::format("no endpoint {} {}", req.method.substr(0, 16), req.path.substr(0, 128)));
  }
  if (req.method != "POST") return MethodNotAllowed(req);
  auto which = DecodePathSegment(seg[5]);
  if (!which) return ErrorResponse(which.error());
  if (c.role != Role::kAdministrator) {
    return Forbidden(c, "image-signing-key.revoke", *which,
                     "revoking image-signing keys needs the Administrator role");
  }
  std::string key_id, key_name;
  auto revoked = db_.Transact([&](store::Session& s) -> Result<void> {
    // By ID (64 hex digits) or by name.
    auto row =
        s.QueryOne(IsSha256Hex(*which) ? "SELECT key_id, name, revoked_at FROM image_signing_keys "
                                         "WHERE tenant_id = ? AND key_id = ?"
                                       : "SELECT key_id, name, revoked_at FROM image_signing_keys "
                                         "WHERE tenant_id = ? AND name = ?",
                   {c.tenant.id, *which});
    if (!row) {
      return Fail(
          LookupError(row.error(), fmt::format("no image-signing key {} in tenant '{}'",
                                               formats::QuoteForMessage(*which), c.tenant.name)));
    }
    MOAT_ASSIGN_OR_RETURN(key_id, row->Text(0));
    MOAT_ASSIGN_OR_RETURN(key_name, row->Text(1));
    if (!row->IsNull(2)) {
      return Fail(ErrorCode::kFailedPrecondition, "image-signing key '{}' is already revoked",
                  key_name);
    }
    MOAT_TRY(
        s.Execute("UPDATE image_signing_keys SET revoked_at = ? WHERE tenant_id = ? AND key_id = ?",
                  {c.now, c.tenant.id, key_id}));
    return AuditAs(s, c.now, &c.caller, c.tenant.id, "image-signing-key.revoke", key_id, "ok",
                   fmt::format("'{}'; packages it signed are refused from now on", key_name));
  });
  if (!revoked) return ErrorResponse(revoked.error());
  return JsonResponse(200, {{"id", key_id}, {"name", key_name}, {"revoked", true}});
}

// /api/v1/tenants/{t}/images[/{id}[/content]]
HttpResponse FleetApi::Images(Context& c, std::span<const std::string_view> seg) {
  const HttpRequest& req = c.req;
  if (seg.size() == 5) {
    if (req.method == "POST") return AddImage(c);
    if (req.method != "GET") return MethodNotAllowed(req);
    auto rows = db_.Query(
        std::string(kImageColumns) + "WHERE i.tenant_id = ? ORDER BY i.component_id, i.created_at",
        {c.tenant.id});
    if (!rows) return ErrorResponse(rows.error());
    Json list = Json::array();
    for (const auto& r : *rows) list.push_back(ImageJson(r));
    return JsonResponse(200, {{"tenant", c.tenant.name}, {"images", list}});
  }
  if (seg.size() > 7 || (seg.size() == 7 && seg[6] != "content")) {
    return NotFound(
        fmt::format("no endpoint {} {}", req.method.substr(0, 16), req.path.substr(0, 128)));
  }
  if (req.method != "GET") return MethodNotAllowed(req);
  const std::string id(seg[5]);
  if (!IsSha256Hex(id)) {
    return ErrorResponse(
        Error(ErrorCode::kInvalidArgument,
              fmt::format("image ID {} is not 64 lowercase hexadecimal characters (the package's "
                          "SHA-256)",
                          formats::QuoteForMessage(id))));
  }
  auto row = db_.QueryOne(std::string(kImageColumns) + "WHERE i.tenant_id = ? AND i.id = ?",
                          {c.tenant.id, id});
  if (!row) {
    return ErrorResponse(
        LookupError(row.error(), fmt::format("no image {} in tenant '{}'", id, c.tenant.name)));
  }
  if (seg.size() == 6) {
    Json j = ImageJson(*row);
    j["tenant"] = c.tenant.name;
    return JsonResponse(200, j);
  }
  auto bytes = ReadFileBytes(image_dir_ / id, kMaxImagePackageBytes);
  if (!bytes) return ErrorResponse(bytes.error());
  // The blob is named by its hash; a mismatch means the disk was changed behind our back.
  if (HexEncode(crypto::Sha256(*bytes)) != id) {
    return ErrorResponse(
        Error(ErrorCode::kInternal, fmt::format("image blob {} does not match its hash", id)));
  }
  HttpResponse r;
  r.status = 200;
  r.content_type = "application/octet-stream";
  r.body.assign(bytes->begin(), bytes->end());
  return r;
}

HttpResponse FleetApi::AddImage(Context& c) {
  const HttpRequest& req = c.req;
  if (c.role < Role::kContributor) {
    return Forbidden(c, "image.add", "-",
                     "adding images needs the Contributor or Administrator role");
  }
  if (req.Header("content-type") != "application/octet-stream") {
    return ProblemResponse(415, "unsupported-media-type",
                           fmt::format("an image upload is the package file itself, with "
                                       "Content-Type application/octet-stream, not {}",
                                       formats::QuoteForMessage(req.Header("content-type"))));
  }
  if (req.body.empty()) {
    return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                               "the request body (the image "
                               "package) is empty"));
  }
  if (req.body.size() > kMaxImagePackageBytes) {
    return ErrorResponse(
        Error(ErrorCode::kLimitExceeded,
              fmt::format("the image package is over {} MiB", kMaxImagePackageBytes >> 20)));
  }
  // Every key the tenant ever registered, revoked ones included: a package signed by a revoked
  // key is still verified first, so the refusal can say which key it was.
  auto key_rows = db_.Query(
      "SELECT key_id, name, public_key_pem, revoked_at FROM image_signing_keys "
      "WHERE tenant_id = ?",
      {c.tenant.id});
  if (!key_rows) return ErrorResponse(key_rows.error());
  std::vector<crypto::PublicKey> keys;
  for (const auto& r : *key_rows) {
    auto key = crypto::PublicKey::FromPem(*r.Text(2));
    if (!key) return ErrorResponse(key.error());
    keys.push_back(std::move(*key));
  }
  const std::span<const uint8_t> package(reinterpret_cast<const uint8_t*>(req.body.data()),
                                         req.body.size());
  // SECURITY: verify before parsing anything: the header, manifest and payload are read only
  // from bytes whose signature checked out against one of this tenant's keys.
  formats::ImagePackageLimits limits;
  limits.max_package_bytes = kMaxImagePackageBytes;
  auto verified = formats::VerifyImagePackage(package, keys, limits);
  if (!verified) {
    Error e = verified.error();
    if (e.code() == ErrorCode::kVerificationFailed && keys.empty()) {
      e = Error(ErrorCode::kVerificationFailed,
                fmt::format("{}; tenant '{}' has no image-signing keys yet (moat "
                            "image-signing-key add)",
                            e.message(), c.tenant.name));
    }
    auto audited = db_.Transact([&](store::Session& s) -> Result<void> {
      return AuditAs(s, c.now, &c.caller, c.tenant.id, "image.add", "-", "refused", e.message());
    });
    if (!audited) log::Error("audit log write failed: {}", audited.error().message());
    // Malformed packages (kInvalidArgument, kLimitExceeded) keep their codes.
    return ErrorResponse(e);
  }
  const std::string signer = HexEncode(verified->signature().key_id);
  std::string signer_name;
  for (const auto& r : *key_rows) {
    if (*r.Text(0) != signer) continue;
    signer_name = *r.Text(1);
    if (!r.IsNull(3)) {
      const std::string why = fmt::format(
          "image package refused: signed by image-signing key '{}' ({}), which was revoked at {}",
          signer_name, signer, Time(*r.Int(3)));
      auto audited = db_.Transact([&](store::Session& s) -> Result<void> {
        return AuditAs(s, c.now, &c.caller, c.tenant.id, "image.add", "-", "refused", why);
      });
      if (!audited) log::Error("audit log write failed: {}", audited.error().message());
      return ErrorResponse(Error(ErrorCode::kVerificationFailed, why));
    }
  }
  const formats::ImagePackageHeader& h = verified->header();
  const std::string id = HexEncode(crypto::Sha256(package));
  const std::string component_id = h.component_id.ToString();
  const std::string image_type(formats::ImageTypeName(h.image_type));

  // The blob first, then the row: a crash in between leaves an unreferenced blob (harmless,
  // and the next add of the same image reuses it), never a row without its bytes.
  const std::filesystem::path blob = image_dir_ / id;
  // A blob already there is this content (it is named by its hash and written atomically);
  // one of another size was damaged behind our back and is replaced.
  std::error_code ec;
  const auto existing_size = std::filesystem::file_size(blob, ec);
  if (ec || existing_size != package.size()) {
    if (auto w = AtomicWriteFile(blob, package, {.mode = 0600}); !w)
      return ErrorResponse(w.error());
  }
  bool created = false;
  const std::string reference_id = random_.NewUuid();
  auto stored = db_.Transact([&](store::Session& s) -> Result<void> {
    created = false;
    MOAT_ASSIGN_OR_RETURN(
        int64_t n,
        s.Execute("INSERT INTO images (tenant_id, id, image_type, component_id, package_image_id, "
                  "version, name, size_bytes, signer_key_id, created_at, created_by) VALUES "
                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO NOTHING",
                  {c.tenant.id, id, image_type, component_id, h.image_id.ToString(), h.version,
                   h.name, static_cast<int64_t>(package.size()), signer, c.now, c.caller.name}));
    if (n == 0) return Ok();  // already there: adding is idempotent
    created = true;
    // An app image becomes a known-good measurement: a device reports an installed app as
    // (app, component ID, SHA-256 of the package file), see attestation_policy.h.
    if (h.image_type == formats::ImageType::kApplication) {
      MOAT_TRY(s.Execute(
          "INSERT INTO reference_values (id, tenant_id, kind, name, sha256, comment, created_at, "
          "created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (tenant_id, kind, name, sha256) DO NOTHING",
          {reference_id, c.tenant.id, std::string("app"), component_id, id,
           fmt::format("image '{}' {} (added with the image)", h.name, h.version), c.now,
           c.caller.name}));
    }
    return AuditAs(s, c.now, &c.caller, c.tenant.id, "image.add", id, "ok",
                   fmt::format("{} '{}' {} component {} signed by '{}'", image_type, h.name,
                               h.version, component_id, signer_name));
  });
  if (!stored) return ErrorResponse(stored.error());
  auto row = db_.QueryOne(std::string(kImageColumns) + "WHERE i.tenant_id = ? AND i.id = ?",
                          {c.tenant.id, id});
  if (!row) return ErrorResponse(row.error());
  Json j = ImageJson(*row);
  j["tenant"] = c.tenant.name;
  j["created"] = created;
  return JsonResponse(created ? 201 : 200, j);
}

}  // namespace moat::service
