#include "service/device_api.h"

#include <algorithm>
#include <map>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "crypto/random.h"
#include "crypto/x509.h"
#include "formats/attestation.h"
#include "formats/guid.h"
#include "formats/json_reader.h"
#include "formats/tuf.h"
#include "service/attestation_policy.h"
#include "service/audit.h"
#include "service/fleet_api.h"
#include "service/http_util.h"
#include "service/reports.h"
#include "service/tpm_devices.h"

namespace moat::service {

enum class Credential { kIdentity, kClient, kUpdate };

std::string_view CredentialName(Credential c) {
  switch (c) {
    case Credential::kIdentity:
      return "identity";
    case Credential::kClient:
      return "client";
    case Credential::kUpdate:
      return "update";
  }
  return "identity";
}

struct DeviceApi::Caller {
  std::string device_id;
  Credential credential = Credential::kIdentity;
  crypto::Certificate certificate;
};

namespace {

using net::HttpRequest;
using net::HttpResponse;

constexpr size_t kMaxAttestationBodyBytes = 256 * 1024;
constexpr size_t kMaxCsrBytes = 16 * 1024;
constexpr size_t kNonceBytes = 32;
// Outstanding challenges kept per device; asking for more drops the oldest.
constexpr int64_t kMaxOutstandingChallenges = 4;
constexpr int64_t kLastSeenResolutionSeconds = 300;

// A refusal with its own problem type, so a device can act on it without parsing prose.
struct Refusal {
  int status;
  std::string slug;
  std::string detail;
};

HttpResponse Refuse(const Refusal& r) { return ProblemResponse(r.status, r.slug, r.detail); }

Result<DeviceApi::Caller> Identify(const HttpRequest& req) {
  if (!req.client_certificate) {
    return Fail(ErrorCode::kUnauthenticated,
                "device endpoints need a client certificate: the device's certificate or, before "
                "its first attestation, its self-certified identity certificate");
  }
  const crypto::Certificate& cert = *req.client_certificate;
  DeviceApi::Caller caller{.certificate = cert};
  auto id = crypto::DeviceIdFromCertificate(cert);
  if (!id) {
    return Fail(ErrorCode::kPermissionDenied,
                "the client certificate '{}' is not a device certificate (it has no {} name)",
                cert.Subject(), crypto::kDeviceSanPrefix);
  }
  caller.device_id = std::move(*id);
  // SECURITY: the TLS layer admitted this certificate either through a chain to the service
  // root or as a self-certified identity; the two are told apart here, never assumed.
  if (crypto::IsSelfCertifiedDeviceCertificate(cert)) {
    caller.credential = Credential::kIdentity;
  } else if (cert.HasExtendedKeyUsage(crypto::ExtendedKeyUsage::kClientAuth)) {
    caller.credential = Credential::kClient;
  } else if (cert.HasExtendedKeyUsage(crypto::ExtendedKeyUsage::kMoatDeviceUpdate)) {
    caller.credential = Credential::kUpdate;
  } else {
    return Fail(ErrorCode::kPermissionDenied,
                "the client certificate '{}' is not valid for device endpoints", cert.Subject());
  }
  return caller;
}

struct DeviceRecord {
  std::string tenant_id;  // empty: unclaimed
  std::string tenant_name;
  // DER SubjectPublicKeyInfo; parsed only where a signature is checked (decoding a key costs
  // more than the rest of a cheap request).
  std::vector<uint8_t> identity_key_der;
  // A TPM device (registered with its EK certificate, DER); then identity_key_der is the EK's
  // TPM2B_PUBLIC and the device proves itself by credential activation and quotes.
  std::vector<uint8_t> ek_certificate;
  bool is_tpm() const { return !ek_certificate.empty(); }
};

// The registered, claimed device, or the refusal a device can act on.
std::variant<DeviceRecord, Refusal, Error> LookUpDevice(store::Database& db,
                                                        const std::string& device_id) {
  auto row = db.QueryOne(
      "SELECT d.public_key, d.tenant_id, t.name, d.ek_certificate FROM devices d LEFT JOIN "
      "tenants t ON t.id = "
      "d.tenant_id WHERE d.id = ?",
      {device_id});
  if (!row) {
    if (row.error().code() != ErrorCode::kNotFound) return row.error();
    return Refusal{403, "device-not-registered",
                   fmt::format("device {} is not registered with this service; its manufacturer "
                               "registers it first (moat device register)",
                               device_id)};
  }
  auto der = row->Blob(0);
  if (!der) return der.error();
  if (row->IsNull(1)) {
    return Refusal{403, "device-not-claimed",
                   fmt::format("device {} is registered but not claimed by any tenant; an "
                               "operator claims it with `moat device claim {}`",
                               device_id, device_id)};
  }
  DeviceRecord record{*row->Text(1), *row->Text(2), std::move(*der), {}};
  if (!row->IsNull(3)) {
    auto ek = row->Blob(3);
    if (!ek) return ek.error();
    record.ek_certificate = std::move(*ek);
  }
  return record;
}

// SECURITY: a self-certified certificate names any device ID it likes (a TPM device's ID is not
// its key's); for a device registered with an identity key, it must be that key. A TPM device
// proves itself later, by credential activation and its quote.
std::optional<Refusal> CheckIdentityCredential(const DeviceApi::Caller& caller,
                                               const DeviceRecord& device) {
  if (caller.credential != Credential::kIdentity || device.is_tpm()) return std::nullopt;
  if (caller.certificate.public_key().ToDer() == device.identity_key_der) return std::nullopt;
  return Refusal{403, "forbidden",
                 fmt::format("the self-certified certificate is not over device {}'s registered "
                             "identity key",
                             caller.device_id)};
}

std::string ChainPem(const crypto::Certificate& leaf, const crypto::Certificate& ca) {
  return leaf.ToPem() + ca.ToPem();
}

// The device's group: (id, name, product name), nullopt when it is in none.
struct DeviceGroupRef {
  std::string id, name, product;
};
Result<std::optional<DeviceGroupRef>> GroupOf(store::Database& db, const std::string& device_id) {
  MOAT_ASSIGN_OR_RETURN(
      auto rows, db.Query("SELECT g.id, g.name, p.name FROM devices d JOIN device_groups g ON g.id "
                          "= d.device_group_id JOIN products p ON p.id = g.product_id WHERE d.id "
                          "= ?",
                          {device_id}));
  if (rows.empty()) return std::optional<DeviceGroupRef>();
  return std::optional<DeviceGroupRef>(
      DeviceGroupRef{*rows[0].Text(0), *rows[0].Text(1), *rows[0].Text(2)});
}

// The tenant's reference values for the names `log` measures (all kinds), in chunks of at most
// kNamesPerQuery bound parameters. A stored digest that is not 64 hex digits is skipped (the
// operator API never writes one).
Result<std::vector<ReferenceValue>> LoadReferenceValues(store::Database& db,
                                                        const std::string& tenant_id,
                                                        const formats::MeasurementLog& log) {
  constexpr size_t kNamesPerQuery = 64;
  std::vector<std::string> names;
  names.reserve(log.entries.size());
  for (const formats::Measurement& m : log.entries) names.push_back(m.name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::vector<ReferenceValue> out;
  for (size_t first = 0; first < names.size(); first += kNamesPerQuery) {
    const size_t count = std::min(kNamesPerQuery, names.size() - first);
    // `kind IN (...)` lets SQLite use the (tenant_id, kind, name, sha256) index for the names
    // too; without it only the tenant_id prefix is usable and each query scans the tenant.
    std::string sql =
        "SELECT kind, name, sha256 FROM reference_values WHERE tenant_id = ? AND kind IN "
        "('boot', 'os', 'app') AND name IN (";
    std::vector<store::Value> params;
    params.reserve(count + 1);
    params.emplace_back(tenant_id);
    for (size_t i = 0; i < count; ++i) {
      sql += i == 0 ? "?" : ", ?";
      params.emplace_back(names[first + i]);
    }
    sql += ")";
    MOAT_ASSIGN_OR_RETURN(auto rows, db.Query(sql, params));
    for (const auto& r : rows) {
      ReferenceValue v;
      const std::string kind = *r.Text(0);
      v.kind = kind == "boot" ? formats::MeasurementKind::kBoot
               : kind == "os" ? formats::MeasurementKind::kOs
                              : formats::MeasurementKind::kApp;
      v.name = *r.Text(1);
      auto digest = HexDecode(*r.Text(2));
      if (!digest || digest->size() != v.digest.size()) continue;
      std::copy(digest->begin(), digest->end(), v.digest.begin());
      out.push_back(std::move(v));
    }
  }
  return out;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && s.size() <= 10 && s[0] != '0' &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsLowerHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A path a repository can hold (docs/formats/tuf.md): "timestamp.json", "root.json",
// "<n>.root.json", "<n>.snapshot.json", "<n>.targets.json" or "targets/<target file name>".
bool IsRepositoryPath(std::string_view path) {
  if (path == "timestamp.json" || path == "root.json") return true;
  if (path.starts_with("targets/")) {
    return formats::tuf::ValidateTargetName(path.substr(8)).has_value();
  }
  const size_t dot = path.find('.');
  if (dot == std::string_view::npos || !AllDigits(path.substr(0, dot))) return false;
  const std::string_view rest = path.substr(dot);
  return rest == ".root.json" || rest == ".snapshot.json" || rest == ".targets.json";
}

// "targets/<sha256>.<image id>.imagepackage" with the two equal: an image package, served from
// the image store. The image ID, or "" for any other path.
std::string ImagePackageTarget(std::string_view path) {
  constexpr std::string_view kSuffix = ".imagepackage";
  if (!path.starts_with("targets/") || !path.ends_with(kSuffix)) return "";
  std::string_view name = path.substr(8, path.size() - 8 - kSuffix.size());
  if (name.size() != 129 || name[64] != '.') return "";
  std::string_view hash = name.substr(0, 64), id = name.substr(65);
  if (!IsLowerHex64(hash) || hash != id) return "";
  return std::string(id);
}

constexpr size_t kMaxStatusListItems = 512;

}  // namespace

DeviceApi::DeviceApi(store::Database& db, const ServicePki& pki, const Clock& clock,
                     Repositories& repositories, std::filesystem::path image_dir)
    : db_(db),
      pki_(pki),
      clock_(clock),
      repositories_(repositories),
      image_dir_(std::move(image_dir)),
      cas_(pki) {}

void DeviceApi::NoteSeen(const std::string& device_id, int64_t now) {
  {
    std::lock_guard lock(seen_mu_);
    auto [it, inserted] = seen_written_.try_emplace(device_id, now);
    if (!inserted && now - it->second < kLastSeenResolutionSeconds) return;
    it->second = now;
    // Bounded: a service seeing millions of devices forgets the oldest notes, which only
    // costs an extra write.
    if (seen_written_.size() > 100000) seen_written_.clear();
  }
  auto r = db_.Transact([&](store::Session& s) -> Result<void> {
    MOAT_TRY(s.Execute("UPDATE devices SET last_seen = ? WHERE id = ?", {now, device_id}));
    return Ok();
  });
  if (!r) log::Warn("recording last_seen of device {}: {}", device_id, r.error().message());
}

HttpResponse DeviceApi::Handle(const HttpRequest& req) {
  const auto seg = Segments(req.path);
  if (seg.size() < 3 || seg[0] != "device" || seg[1] != "v1") {
    return ProblemResponse(404, "not-found",
                           fmt::format("no endpoint {}", req.path.substr(0, 128)));
  }
  auto caller = Identify(req);
  if (!caller) return ErrorResponse(caller.error());

  if (seg.size() == 3 && seg[2] == "whoami") {
    if (req.method != "GET") return MethodNotAllowed(req);
    return WhoAmI(*caller);
  }
  if (seg.size() == 4 && seg[2] == "attestation" && seg[3] == "challenge") {
    if (req.method != "POST") return MethodNotAllowed(req);
    return Challenge(*caller, req);
  }
  if (seg.size() == 3 && seg[2] == "attestation") {
    if (req.method != "POST") return MethodNotAllowed(req);
    return Attest(*caller, req);
  }
  if (seg.size() == 3 && seg[2] == "reports") {
    if (req.method != "POST") return MethodNotAllowed(req);
    return Reports(*caller, req);
  }
  if (seg.size() == 3 && seg[2] == "status") {
    if (req.method != "POST") return MethodNotAllowed(req);
    return Status(*caller, req);
  }
  if (seg.size() >= 5 && seg[2] == "repo") {
    if (req.method != "GET") return MethodNotAllowed(req);
    return Repository(*caller, req, seg[3]);
  }
  return ProblemResponse(
      404, "not-found",
      fmt::format("no endpoint {} {}", req.method.substr(0, 16), req.path.substr(0, 128)));
}

HttpResponse DeviceApi::Reports(const Caller& caller, const HttpRequest& req) {
  // SECURITY: a bare identity proves only key possession; reports come from devices the
  // service has certified (healthy or not: the update certificate is enough).
  if (caller.credential == Credential::kIdentity) {
    return Refuse({403, "forbidden",
                   "failure reports need the device's client or update certificate (attest "
                   "first)"});
  }
  if (!req.Header("content-type").starts_with("application/json")) {
    return ErrorResponse(
        Error(ErrorCode::kInvalidArgument, "Content-Type must be application/json"));
  }
  auto events = formats::ParseFailureEventBatch(req.body);
  if (!events) return ErrorResponse(events.error().WithContext("body"));
  auto device = LookUpDevice(db_, caller.device_id);
  if (auto* e = std::get_if<Error>(&device)) return ErrorResponse(*e);
  if (auto* r = std::get_if<Refusal>(&device)) return Refuse(*r);
  const auto& d = std::get<DeviceRecord>(device);
  const int64_t now = store::UnixSeconds(clock_.Now());
  StoredBatch stored;
  auto saved = db_.Transact([&](store::Session& s) -> Result<void> {
    MOAT_ASSIGN_OR_RETURN(stored,
                          StoreFailureEvents(s, d.tenant_id, caller.device_id, *events, now));
    return Ok();
  });
  if (!saved) return ErrorResponse(saved.error());
  NoteSeen(caller.device_id, now);
  return JsonResponse(200, {{"accepted", stored.accepted}, {"duplicates", stored.duplicates}});
}

HttpResponse DeviceApi::Repository(const Caller& caller, const HttpRequest& req,
                                   std::string_view group_id) {
  // SECURITY: like reports, the repository is for devices the service has certified (an
  // unhealthy device's update certificate is enough, so it can update itself back to health).
  if (caller.credential == Credential::kIdentity) {
    return Refuse({403, "forbidden",
                   "the update repository needs the device's client or update certificate "
                   "(attest first)"});
  }
  const std::string prefix = fmt::format("/device/v1/repo/{}/", group_id);
  const std::string_view path =
      std::string_view(req.path).substr(std::min(prefix.size(), req.path.size()));
  if (!req.path.starts_with(prefix) || !IsRepositoryPath(path)) {
    return ProblemResponse(
        404, "not-found",
        fmt::format("no file {} in a repository (docs/formats/tuf.md lists the paths)",
                    formats::QuoteForMessage(req.path.substr(0, 256))));
  }
  auto device = LookUpDevice(db_, caller.device_id);
  if (auto* e = std::get_if<Error>(&device)) return ErrorResponse(*e);
  if (auto* r = std::get_if<Refusal>(&device)) return Refuse(*r);
  auto group = GroupOf(db_, caller.device_id);
  if (!group) return ErrorResponse(group.error());
  // SECURITY: a device reads its own group's repository only; what another group runs is none
  // of its business.
  if (!*group) {
    return Refuse({403, "forbidden",
                   fmt::format("device {} is in no device group, so it has no update repository "
                               "(an operator places it with moat device update {} "
                               "--device-group PRODUCT/GROUP)",
                               caller.device_id, caller.device_id)});
  }
  if ((*group)->id != group_id) {
    return Refuse({403, "forbidden",
                   fmt::format("device {} is in device group {} ({}/{}); the repository of "
                               "device group {} is not its own",
                               caller.device_id, (*group)->id, (*group)->product, (*group)->name,
                               formats::QuoteForMessage(group_id.substr(0, 64)))});
  }
  const SystemTime now = clock_.Now();
  NoteSeen(caller.device_id, store::UnixSeconds(now));
  const std::string gid(group_id);
  HttpResponse r;
  r.status = 200;
  r.content_type = "application/octet-stream";
  if (std::string image_id = ImagePackageTarget(path); !image_id.empty()) {
    // Only images a deployment of this group names: the image store holds every tenant's.
    auto listed = db_.Query(
        "SELECT 1 FROM deployment_images WHERE device_group_id = ? AND image_id = ? LIMIT 1",
        {gid, image_id});
    if (!listed) return ErrorResponse(listed.error());
    if (listed->empty()) {
      return ProblemResponse(404, "not-found",
                             fmt::format("no target {} in this repository", path.substr(8)));
    }
    auto bytes = ReadFile(image_dir_ / image_id, FleetApi::kMaxImagePackageBytes);
    if (!bytes) return ErrorResponse(bytes.error());
    r.body = std::move(*bytes);
    return r;
  }
  auto file = repositories_.ReadFile(gid, path);
  if (!file) return ErrorResponse(file.error());
  if (!*file) {
    // A group from before repositories existed gets one on first use.
    auto exists = db_.Query("SELECT 1 FROM tuf_repositories WHERE device_group_id = ?", {gid});
    if (!exists) return ErrorResponse(exists.error());
    if (exists->empty()) {
      if (auto e = repositories_.Ensure(gid, now); !e) return ErrorResponse(e.error());
      file = repositories_.ReadFile(gid, path);
      if (!file) return ErrorResponse(file.error());
    }
  }
  if (!*file) {
    return ProblemResponse(404, "not-found",
                           fmt::format("no file {} in this repository", std::string(path)));
  }
  if (!path.starts_with("targets/")) r.content_type = "application/json";
  r.body = std::move(**file);
  return r;
}

HttpResponse DeviceApi::Status(const Caller& caller, const HttpRequest& req) {
  if (caller.credential == Credential::kIdentity) {
    return Refuse({403, "forbidden",
                   "status reports need the device's client or update certificate (attest "
                   "first)"});
  }
  auto body = ParseBody(req, kMaxStatusBytes);
  if (!body) return ErrorResponse(body.error());
  struct Report {
    std::string os_name, os_version;
    Json installed = Json::array();
    Json running = Json::array();
    std::string result, detail;
    std::optional<int64_t> at, targets_version;
  } report;
  auto parse = [&]() -> Result<void> {
    formats::ObjectReader r(*body, "body");
    MOAT_TRY(r.status());
    auto member = [&](std::string_view key) -> Result<const Json*> {
      const Json* m = r.Member(key);
      if (m == nullptr) {
        return Fail(ErrorCode::kInvalidArgument, "{}: missing field '{}'", r.PathOf(key), key);
      }
      return m;
    };
    MOAT_ASSIGN_OR_RETURN(const Json* os, member("os"));
    formats::ObjectReader osr(*os, r.PathOf("os"));
    MOAT_TRY(osr.status());
    MOAT_ASSIGN_OR_RETURN(report.os_name, osr.RequiredString("name", 128));
    MOAT_ASSIGN_OR_RETURN(report.os_version, osr.RequiredString("version", 128));
    MOAT_TRY(osr.NoOtherFields());

    MOAT_ASSIGN_OR_RETURN(const Json* installed, member("installed"));
    MOAT_TRY(formats::ExpectType(*installed, Json::value_t::array, r.PathOf("installed")));
    if (installed->size() > kMaxStatusListItems) {
      return Fail(ErrorCode::kInvalidArgument, "{}: at most {} images", r.PathOf("installed"),
                  kMaxStatusListItems);
    }
    for (size_t i = 0; i < installed->size(); ++i) {
      const std::string path = fmt::format("{}[{}]", r.PathOf("installed"), i);
      formats::ObjectReader ir((*installed)[i], path);
      MOAT_TRY(ir.status());
      MOAT_ASSIGN_OR_RETURN(std::string component, ir.RequiredString("component_id", 64));
      if (auto g = formats::Guid::Parse(component); !g) {
        return Fail(g.error().WithContext(ir.PathOf("component_id")));
      }
      MOAT_ASSIGN_OR_RETURN(std::string image_id, ir.RequiredString("image_id", 64));
      if (!IsLowerHex64(image_id)) {
        return Fail(ErrorCode::kInvalidArgument,
                    "{}: expected 64 lowercase hexadecimal characters (the image ID)",
                    ir.PathOf("image_id"));
      }
      MOAT_ASSIGN_OR_RETURN(std::string version, ir.RequiredString("version", 64));
      if (formats::HasControlCharacter(version)) {
        return Fail(ErrorCode::kInvalidArgument, "{}: must not hold control characters",
                    ir.PathOf("version"));
      }
      MOAT_TRY(ir.NoOtherFields());
      report.installed.push_back(
          {{"component_id", component}, {"image_id", image_id}, {"version", version}});
    }

    MOAT_ASSIGN_OR_RETURN(const Json* running, member("running"));
    MOAT_TRY(formats::ExpectType(*running, Json::value_t::array, r.PathOf("running")));
    if (running->size() > kMaxStatusListItems) {
      return Fail(ErrorCode::kInvalidArgument, "{}: at most {} components", r.PathOf("running"),
                  kMaxStatusListItems);
    }
    for (size_t i = 0; i < running->size(); ++i) {
      const std::string path = fmt::format("{}[{}]", r.PathOf("running"), i);
      MOAT_TRY(formats::ExpectType((*running)[i], Json::value_t::string, path));
      auto g = formats::Guid::Parse((*running)[i].get<std::string>());
      if (!g) return Fail(g.error().WithContext(path));
      report.running.push_back(g->ToString());
    }

    MOAT_ASSIGN_OR_RETURN(const Json* last, member("last_update"));
    formats::ObjectReader lr(*last, r.PathOf("last_update"));
    MOAT_TRY(lr.status());
    MOAT_ASSIGN_OR_RETURN(report.result, lr.RequiredString("result", 16));
    constexpr std::string_view kResults[] = {"ok", "failed", "rolled-back", "deferred", "none"};
    if (std::find(std::begin(kResults), std::end(kResults), report.result) == std::end(kResults)) {
      return Fail(ErrorCode::kInvalidArgument,
                  "{}: {} is not one of ok, failed, rolled-back, deferred, none",
                  lr.PathOf("result"), formats::QuoteForMessage(report.result));
    }
    if (const Json* at = lr.Member("at"); at != nullptr && !at->is_null()) {
      MOAT_TRY(formats::ExpectType(*at, Json::value_t::string, lr.PathOf("at")));
      auto t = ParseRfc3339(at->get<std::string>());
      if (!t) return Fail(t.error().WithContext(lr.PathOf("at")));
      report.at = store::UnixSeconds(*t);
    }
    MOAT_ASSIGN_OR_RETURN(report.detail, lr.OptionalString("detail", 1024));
    if (const Json* v = lr.Member("targets_version"); v != nullptr && !v->is_null()) {
      MOAT_ASSIGN_OR_RETURN(report.targets_version,
                            lr.OptionalInt("targets_version", 0, formats::tuf::kMaxVersion));
    }
    MOAT_TRY(lr.NoOtherFields());
    MOAT_TRY(r.NoOtherFields());
    return Ok();
  };
  if (auto parsed = parse(); !parsed) return ErrorResponse(parsed.error());

  auto device = LookUpDevice(db_, caller.device_id);
  if (auto* e = std::get_if<Error>(&device)) return ErrorResponse(*e);
  if (auto* r = std::get_if<Refusal>(&device)) return Refuse(*r);
  const int64_t now = store::UnixSeconds(clock_.Now());
  std::vector<store::Value> values;
  values.reserve(10);
  values.emplace_back(caller.device_id);
  values.emplace_back(now);
  values.emplace_back(report.os_name);
  values.emplace_back(report.os_version);
  values.emplace_back(DumpJson(report.installed));
  values.emplace_back(DumpJson(report.running));
  values.emplace_back(report.result);
  if (report.at) {
    values.emplace_back(*report.at);
  } else {
    values.emplace_back(store::kNull);
  }
  values.emplace_back(report.detail);
  if (report.targets_version) {
    values.emplace_back(*report.targets_version);
  } else {
    values.emplace_back(store::kNull);
  }
  auto saved = db_.Transact([&](store::Session& s) -> Result<void> {
    MOAT_TRY(s.Execute(
        "INSERT INTO device_status (device_id, reported_at, os_name, os_version, installed, "
        "running, last_update_result, last_update_at, last_update_detail, "
        "last_update_targets_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (device_id) DO UPDATE SET reported_at = excluded.reported_at, "
        "os_name = excluded.os_name, os_version = excluded.os_version, installed = "
        "excluded.installed, running = excluded.running, last_update_result = "
        "excluded.last_update_result, last_update_at = excluded.last_update_at, "
        "last_update_detail = excluded.last_update_detail, last_update_targets_version = "
        "excluded.last_update_targets_version",
        values));
    MOAT_TRY(s.Execute("UPDATE devices SET last_seen = ? WHERE id = ?", {now, caller.device_id}));
    return Ok();
  });
  if (!saved) return ErrorResponse(saved.error());
  HttpResponse r;
  r.status = 204;
  r.content_type = "";
  return r;
}

HttpResponse DeviceApi::WhoAmI(const Caller& caller) {
  auto device = LookUpDevice(db_, caller.device_id);
  if (auto* e = std::get_if<Error>(&device)) return ErrorResponse(*e);
  if (auto* r = std::get_if<Refusal>(&device)) return Refuse(*r);
  const auto& d = std::get<DeviceRecord>(device);
  NoteSeen(caller.device_id, store::UnixSeconds(clock_.Now()));
  auto group = GroupOf(db_, caller.device_id);
  if (!group) return ErrorResponse(group.error());
  Json group_json = nullptr, repository = nullptr;
  if (*group) {
    group_json = {{"id", (*group)->id}, {"name", (*group)->name}, {"product", (*group)->product}};
    repository = fmt::format("/device/v1/repo/{}/", (*group)->id);
  }
  return JsonResponse(200, {{"device_id", caller.device_id},
                            {"tenant", d.tenant_name},
                            {"tenant_id", d.tenant_id},
                            {"credential", CredentialName(caller.credential)},
                            {"certificate_not_after", FormatRfc3339(caller.certificate.NotAfter())},
                            {"device_group", group_json},
                            {"repository", repository}});
}

HttpResponse DeviceApi::Challenge(const Caller& caller, const HttpRequest& req) {
  auto device = LookUpDevice(db_, caller.device_id);
  if (auto* e = std::get_if<Error>(&device)) return ErrorResponse(*e);
  if (auto* r = std::get_if<Refusal>(&device)) return Refuse(*r);
  const DeviceRecord& d = std::get<DeviceRecord>(device);
  if (auto refused = CheckIdentityCredential(caller, d)) return Refuse(*refused);
  const SystemTime now = clock_.Now();
  // A TPM device names its attestation key; the challenge carries a credential for it that
  // only the TPM holding the registered EK can activate (docs/service-api.md, "TPM devices").
  Json credential_json;
  std::optional<std::string> ak_name_hex, credential_sha256;
  if (d.is_tpm()) {
    std::string ak_text;
    if (!req.body.empty()) {
      auto body = ParseBody(req, kMaxCsrBytes);
      if (!body) return ErrorResponse(body.error());
      formats::ObjectReader reader(*body, "body");
      if (auto st = reader.status(); !st) return ErrorResponse(st.error());
      auto ak = reader.RequiredString("ak_tpm_public", 2048);
      if (!ak) return ErrorResponse(ak.error());
      if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
      ak_text = *ak;
    }
    auto ak_bytes = Base64Decode(ak_text, Base64Alphabet::kUrl, Base64Padding::kWithout);
    if (ak_text.empty() || !ak_bytes) {
      return Refuse({400, "tpm-ak-required",
                     fmt::format("device {} is a TPM device: its challenge request names its "
                                 "attestation key, body {{\"ak_tpm_public\": <base64url "
                                 "TPM2B_PUBLIC>}}",
                                 caller.device_id)});
    }
    auto ak = formats::ParseTpm2bPublic(*ak_bytes);
    if (!ak) return ErrorResponse(ak.error().WithContext("body.ak_tpm_public"));
    const uint32_t want = formats::kTpmaRestricted | formats::kTpmaSign |
                          formats::kTpmaFixedTpm | formats::kTpmaSensitiveDataOrigin;
    if (ak->type != formats::kTpmAlgEcc || (ak->attributes & want) != want) {
      return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                 "body.ak_tpm_public: not a restricted, fixedTPM, TPM-generated "
                                 "ECC signing key"));
    }
    // SECURITY: the EK comes from the registered certificate, re-verified now (a manufacturer
    // CA may have been removed since), never from the request.
    auto ek = TpmDeviceFromEkCertificateDer(db_, d.ek_certificate, now);
    if (!ek) {
      return Refuse({403, "attestation-failed",
                     fmt::format("device {}'s EK certificate: {}", caller.device_id,
                                 ek.error().message())});
    }
    const std::vector<uint8_t> ak_name = formats::TpmName(*ak);
    const std::vector<uint8_t> secret = crypto::RandomBytes(32);
    auto made = formats::MakeCredential(ek->ek, ak_name, secret, crypto::RandomBytes(32));
    if (!made) return ErrorResponse(made.error());
    ak_name_hex = HexEncode(ak_name);
    credential_sha256 = HexEncode(crypto::Sha256(secret));
    credential_json = {
        {"credential_blob",
         Base64Encode(made->credential_blob, Base64Alphabet::kUrl, Base64Padding::kWithout)},
        {"encrypted_secret",
         Base64Encode(made->encrypted_secret, Base64Alphabet::kUrl, Base64Padding::kWithout)}};
  }
  const SystemTime expires = now + pki_.lifetimes().attestation_challenge;
  const std::vector<uint8_t> nonce = crypto::RandomBytes(kNonceBytes);
  const std::string nonce_hex = HexEncode(nonce);
  auto stored = db_.Transact([&](store::Session& s) -> Result<void> {
    MOAT_TRY(s.Execute("DELETE FROM attestation_challenges WHERE device_id = ? AND expires_at <= ?",
                       {caller.device_id, store::UnixSeconds(now)}));
    MOAT_TRY(s.Execute(
        "DELETE FROM attestation_challenges WHERE device_id = ? AND nonce NOT IN (SELECT nonce "
        "FROM attestation_challenges WHERE device_id = ? ORDER BY expires_at DESC LIMIT ?)",
        {caller.device_id, caller.device_id, kMaxOutstandingChallenges - 1}));
    std::vector<store::Value> values;
    values.emplace_back(nonce_hex);
    values.emplace_back(caller.device_id);
    values.emplace_back(store::UnixSeconds(expires));
    values.emplace_back(ak_name_hex ? store::Value(*ak_name_hex) : store::Value());
    values.emplace_back(credential_sha256 ? store::Value(*credential_sha256) : store::Value());
    MOAT_TRY(s.Execute(
        "INSERT INTO attestation_challenges (nonce, device_id, expires_at, ak_name, "
        "credential_sha256) VALUES (?, ?, ?, ?, ?)",
        values));
    return Ok();
  });
  if (!stored) return ErrorResponse(stored.error());
  NoteSeen(caller.device_id, store::UnixSeconds(now));
  Json answer = {{"nonce", Base64Encode(nonce, Base64Alphabet::kUrl, Base64Padding::kWithout)},
                 {"expires_at", FormatRfc3339(expires)}};
  if (!credential_json.is_null()) answer["credential"] = std::move(credential_json);
  return JsonResponse(201, answer);
}

HttpResponse DeviceApi::Attest(const Caller& caller, const HttpRequest& req) {
  // Parse (bounded) and check the shape of everything before any database work.
  auto body = ParseBody(req, kMaxAttestationBodyBytes);
  if (!body) return ErrorResponse(body.error());
  formats::ObjectReader reader(*body, "body");
  if (auto st = reader.status(); !st) return ErrorResponse(st.error());
  if (!body->contains("evidence")) {
    return ErrorResponse(
        Error(ErrorCode::kInvalidArgument, "body: missing required field 'evidence'"));
  }
  reader.MarkSeen("evidence");
  auto csr_pem = reader.RequiredString("csr", kMaxCsrBytes);
  if (!csr_pem) return ErrorResponse(csr_pem.error());
  if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
  auto evidence = formats::AttestationEvidenceFromJson((*body)["evidence"], "body.evidence");
  if (!evidence) return ErrorResponse(evidence.error());
  if (evidence->device_id != caller.device_id) {
    return Refuse({403, "forbidden",
                   fmt::format("the evidence is for device {} but the client certificate is "
                               "device {}'s",
                               evidence->device_id, caller.device_id)});
  }
  auto csr = crypto::CertificateRequest::FromPem(*csr_pem);
  if (!csr) return ErrorResponse(csr.error().WithContext("body.csr"));
  if (!csr->VerifySignature()) {
    return ErrorResponse(
        Error(ErrorCode::kInvalidArgument, "body.csr: the request's signature does not verify"));
  }
  if (csr->public_key().type() != crypto::KeyType::kEcdsaP256) {
    return ErrorResponse(
        Error(ErrorCode::kInvalidArgument, "body.csr: device keys are ECDSA P-256"));
  }

  auto looked_up = LookUpDevice(db_, caller.device_id);
  if (auto* e = std::get_if<Error>(&looked_up)) return ErrorResponse(*e);
  if (auto* r = std::get_if<Refusal>(&looked_up)) return Refuse(*r);
  const DeviceRecord& device = std::get<DeviceRecord>(looked_up);
  if (auto refused = CheckIdentityCredential(caller, device)) return Refuse(*refused);
  if (device.is_tpm() != (evidence->format == formats::EvidenceFormat::kTpm2Quote)) {
    return Refuse({400, "unsupported-evidence",
                   device.is_tpm() ? "a TPM device (registered with its EK certificate) answers "
                                     "with tpm2-quote evidence"
                                   : "this device was registered with an identity key: it answers "
                                     "with signature evidence"});
  }
  const SystemTime now_time = clock_.Now();
  const int64_t now = store::UnixSeconds(now_time);

  // The nonce is spent whatever happens next: one challenge, one answer.
  std::optional<Refusal> nonce_refusal;
  std::string challenge_ak_name, challenge_credential_sha256;
  auto spent = db_.Transact([&](store::Session& s) -> Result<void> {
    nonce_refusal.reset();
    const std::string nonce_hex = HexEncode(evidence->nonce);
    auto row = s.QueryOne(
        "SELECT expires_at, ak_name, credential_sha256 FROM attestation_challenges WHERE nonce = "
        "? AND device_id = ?",
        {nonce_hex, caller.device_id});
    if (!row) {
      if (row.error().code() != ErrorCode::kNotFound) return Fail(row.error());
      nonce_refusal = Refusal{400, "invalid-nonce",
                              "body.evidence.nonce: unknown or already used; ask for a new "
                              "challenge (POST /device/v1/attestation/challenge)"};
      return Ok();
    }
    MOAT_ASSIGN_OR_RETURN(int64_t expires_at, row->Int(0));
    if (!row->IsNull(1)) {
      MOAT_ASSIGN_OR_RETURN(challenge_ak_name, row->Text(1));
    }
    if (!row->IsNull(2)) {
      MOAT_ASSIGN_OR_RETURN(challenge_credential_sha256, row->Text(2));
    }
    MOAT_TRY(s.Execute("DELETE FROM attestation_challenges WHERE nonce = ?", {nonce_hex}));
    if (expires_at <= now) {
      nonce_refusal =
          Refusal{400, "invalid-nonce",
                  fmt::format("body.evidence.nonce: the challenge expired at {}; ask for a new one",
                              FormatRfc3339(store::FromUnixSeconds(expires_at)))};
    }
    return Ok();
  });
  if (!spent) return ErrorResponse(spent.error());
  if (nonce_refusal) return Refuse(*nonce_refusal);

  auto record_security_event = [&](std::string_view kind, std::string_view detail,
                                   std::string_view result) {
    auto r = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_TRY(AppendSecurityEvent(s, {.at = now,
                                       .tenant_id = device.tenant_id,
                                       .device_id = caller.device_id,
                                       .kind = kind,
                                       .detail = detail}));
      MOAT_TRY(s.Execute(
          "UPDATE devices SET last_seen = ?, last_attestation_at = ?, last_attestation_result = ? "
          "WHERE id = ?",
          {now, now, std::string(result), caller.device_id}));
      return Ok();
    });
    if (!r)
      log::Error("recording a security event for device {}: {}", caller.device_id,
                 r.error().message());
    log::Warn("device {} (tenant '{}'): {}: {}", caller.device_id, device.tenant_name, kind,
              detail);
  };

  // SECURITY: the signature binds the nonce, the device ID, the OS version and the log; it is
  // checked with the key registered by the manufacturer, never one the request carries.
  const std::vector<uint8_t> signing_input = formats::AttestationSigningInput(*evidence);
  if (device.is_tpm()) {
    // SECURITY (TPM): the AK that signed the quote is the one the challenge's credential was
    // made for, and the device activated that credential, so the AK lives in the TPM holding
    // the registered EK; the quote binds the nonce and the log (qualifying data); the log
    // replays to the quoted PCRs; the same AK certified the CSR's key (TPM2_Certify over this
    // nonce), so the TLS key lives in that TPM too and the client certificate cannot be
    // issued for a key that exists outside it. The identity signature adds nothing and is not
    // relied on.
    const formats::Tpm2Quote& quote = *evidence->tpm2_quote;
    std::string failure;
    std::string_view event_kind = "attestation.bad-quote";
    auto ak = formats::ParseTpm2bPublic(quote.ak_tpm_public);
    if (challenge_ak_name.empty() || challenge_credential_sha256.empty()) {
      failure = "the challenge carried no credential (ask for a new one naming the AK)";
    } else if (!ak || HexEncode(formats::TpmName(*ak)) != challenge_ak_name) {
      failure = "the quote is by another attestation key than the challenge's credential names";
    } else if (HexEncode(crypto::Sha256(quote.activated_secret)) != challenge_credential_sha256) {
      failure = "credential activation failed: the activated secret is wrong (not this TPM?)";
    } else if (auto q = formats::VerifyTpm2Quote(quote, signing_input); !q) {
      failure = q.error().message();
    } else if (auto l = CheckLogAgainstQuote(evidence->log, quote); !l) {
      failure = l.error().message();
    } else if (!quote.certify) {
      event_kind = "attestation.bad-certify";
      failure =
          "no TPM2_Certify of the TLS key (tpm2_quote.certify): a TPM device's TLS key must be "
          "shown to live in its TPM";
    } else if (auto ak_key = crypto::PublicKey::FromDer(quote.ak_public); !ak_key) {
      failure = ak_key.error().message();  // VerifyTpm2Quote parsed it: not reached
    } else if (auto c = formats::VerifyTpm2Certify(*quote.certify, *ak_key, evidence->nonce,
                                                   csr->public_key());
               !c) {
      event_kind = "attestation.bad-certify";
      failure = c.error().message();
    }
    if (!failure.empty()) {
      record_security_event(event_kind, failure, "failed: " + failure);
      return Refuse({403, "attestation-failed",
                     fmt::format("TPM attestation failed: {}; no certificate was issued",
                                 failure)});
    }
  } else if (auto identity_key = crypto::PublicKey::FromDer(device.identity_key_der);
             !identity_key) {
    return ErrorResponse(identity_key.error());
  } else if (auto v = identity_key->Verify(signing_input, evidence->signature); !v) {
    record_security_event("attestation.bad-signature",
                          "the evidence signature does not verify with the registered identity "
                          "key",
                          "failed: bad signature");
    return Refuse({403, "attestation-failed",
                   "the evidence signature does not verify with the device's registered "
                   "identity key; no certificate was issued"});
  }

  // Known-good values of the device's tenant, only for the names the log measures: a tenant
  // keeps a reference value for every image it ever uploaded, and loading them all made each
  // attestation cost O(images) (1,000 images: 7% of the service's CPU in bench/, plus the hex
  // decoding). The UNIQUE (tenant_id, kind, name, sha256) index serves the lookup (LoadReferenceValues).
  auto reference_values = LoadReferenceValues(db_, device.tenant_id, evidence->log);
  if (!reference_values) return ErrorResponse(reference_values.error());
  MeasurementVerdict verdict = EvaluateMeasurements(evidence->log, *reference_values);
  if (device.is_tpm()) {
    // The PCR policy of the device's group and of its whole tenant: every PCR named must be
    // quoted and hold one of its listed values (rows for the same PCR are alternatives).
    auto group = GroupOf(db_, caller.device_id);
    if (!group) return ErrorResponse(group.error());
    const std::string group_id = *group ? (**group).id : std::string();
    auto rows = db_.Query(
        "SELECT pcr, sha256 FROM pcr_policies WHERE tenant_id = ? AND (device_group_id IS NULL "
        "OR device_group_id = ?)",
        {device.tenant_id, group_id});
    if (!rows) return ErrorResponse(rows.error());
    std::map<uint32_t, std::vector<std::string>> allowed;
    for (const auto& r : *rows) allowed[static_cast<uint32_t>(*r.Int(0))].push_back(*r.Text(1));
    for (const auto& [pcr, values] : allowed) {
      auto it = evidence->tpm2_quote->pcr_values.find(pcr);
      const std::string have = it == evidence->tpm2_quote->pcr_values.end()
                                   ? std::string("(not quoted)")
                                   : HexEncode(it->second);
      if (std::find(values.begin(), values.end(), have) == values.end()) {
        verdict.passed = false;
        if (verdict.failures.size() < kMaxVerdictFailures) {
          verdict.failures.push_back(
              fmt::format("PCR {} holds {}, which the PCR policy does not allow", pcr, have));
        }
      }
    }
  }

  auto ca = cas_.Issuing(db_, device.tenant_id, now_time);
  if (!ca) return ErrorResponse(ca.error());
  const PkiLifetimes& life = pki_.lifetimes();
  auto profile = [&](crypto::CertificateProfile::Kind kind, std::chrono::seconds lifetime) {
    // Never beyond the issuing CA (a successor is issued long before that matters).
    SystemTime end = std::min(now_time + lifetime, ca->certificate.NotAfter());
    return crypto::CertificateProfile{.kind = kind,
                                      .common_name = caller.device_id,
                                      .organization = device.tenant_name,
                                      .not_before = now_time - life.backdate,
                                      .not_after = end,
                                      .san_uris = {crypto::DeviceSanUri(caller.device_id)}};
  };
  auto update_cert = crypto::IssueCertificate(
      profile(crypto::CertificateProfile::Kind::kDeviceUpdate, life.update_certificate),
      csr->public_key(), ca->certificate, ca->key);
  if (!update_cert) return ErrorResponse(update_cert.error());
  std::optional<crypto::Certificate> client_cert;
  if (verdict.passed) {
    auto issued = crypto::IssueCertificate(
        profile(crypto::CertificateProfile::Kind::kClient, life.device_certificate),
        csr->public_key(), ca->certificate, ca->key);
    if (!issued) return ErrorResponse(issued.error());
    client_cert = std::move(*issued);
  }

  // What the device proved about itself, for `moat device show`.
  Json images = Json::array();
  for (const auto& m : evidence->log.entries) {
    if (m.kind != formats::MeasurementKind::kApp) continue;
    Json image = {{"name", m.name}, {"sha256", HexEncode(m.digest)}};
    if (!m.version.empty()) image["version"] = m.version;
    images.push_back(std::move(image));
  }
  std::string result = verdict.passed ? "passed" : "failed: ";
  if (!verdict.passed) {
    result += verdict.failures.front();
    if (verdict.failures.size() > 1) {
      result += fmt::format(" (+{} more)", verdict.failures.size() - 1);
    }
  }
  auto saved = db_.Transact([&](store::Session& s) -> Result<void> {
    MOAT_TRY(s.Execute(
        "UPDATE devices SET last_seen = ?, os_version = ?, last_attestation_at = ?, "
        "last_attestation_result = ?, measured_images = ?, update_certificate_not_after = ? "
        "WHERE id = ?",
        {now, evidence->os_version, now, result, DumpJson(images),
         store::UnixSeconds(update_cert->NotAfter()), caller.device_id}));
    if (client_cert) {
      MOAT_TRY(s.Execute("UPDATE devices SET certificate_not_after = ? WHERE id = ?",
                         {store::UnixSeconds(client_cert->NotAfter()), caller.device_id}));
    } else {
      std::string detail;
      for (const auto& f : verdict.failures) detail += (detail.empty() ? "" : "; ") + f;
      MOAT_TRY(AppendSecurityEvent(s, {.at = now,
                                       .tenant_id = device.tenant_id,
                                       .device_id = caller.device_id,
                                       .kind = "attestation.measurement-mismatch",
                                       .detail = detail}));
    }
    return Ok();
  });
  if (!saved) return ErrorResponse(saved.error());
  if (verdict.passed) {
    log::Info("device {} (tenant '{}') attested; client certificate valid until {}",
              caller.device_id, device.tenant_name, FormatRfc3339(client_cert->NotAfter()));
  } else {
    log::Warn("device {} (tenant '{}') failed attestation: {}; update certificate only",
              caller.device_id, device.tenant_name, result);
  }

  Json response = {
      {"device_id", caller.device_id},
      {"tenant", device.tenant_name},
      {"result", verdict.passed ? "passed" : "failed"},
      {"failures", verdict.failures},
      {"client_certificate", client_cert ? Json(ChainPem(*client_cert, ca->certificate)) : Json()},
      {"client_certificate_not_after",
       client_cert ? Json(FormatRfc3339(client_cert->NotAfter())) : Json()},
      {"update_certificate", ChainPem(*update_cert, ca->certificate)},
      {"update_certificate_not_after", FormatRfc3339(update_cert->NotAfter())},
      {"root_certificate", pki_.root().certificate.ToPem()}};
  return JsonResponse(200, response);
}

}  // namespace moat::service
