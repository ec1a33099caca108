#include "service/api.h"

#include "crypto/tpm_primitives.h"
#include "service/tpm_devices.h"

#include <ctime>
#include <mutex>
#include <vector>

#include "core/encoding.h"
#include "core/json.h"
#include "core/log.h"
#include "formats/attestation.h"
#include "formats/json_reader.h"
#include "service/audit.h"
#include "service/http_util.h"
#include "service/reports.h"

namespace moat::service {

namespace {

using net::HttpRequest;
using net::HttpResponse;

constexpr int64_t kMaxListLimit = 1000;

// A list's ?limit=: 1..kMaxListLimit, 100 when absent.
Result<int64_t> ParseLimit(const std::string& text) {
  if (text.empty()) return int64_t{100};
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == nullptr || *end != '\0' || v < 1 || v > kMaxListLimit) {
    return Fail(ErrorCode::kInvalidArgument, "limit must be 1..{}", kMaxListLimit);
  }
  return static_cast<int64_t>(v);
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kReader:
      return "Reader";
    case Role::kContributor:
      return "Contributor";
    case Role::kAdministrator:
      return "Administrator";
    case Role::kManufacturer:
      return "Manufacturer";
  }
  return "Reader";
}

Result<Role> ParseRole(std::string_view name) {
  if (name == "Reader") return Role::kReader;
  if (name == "Contributor") return Role::kContributor;
  if (name == "Administrator") return Role::kAdministrator;
  if (name == "Manufacturer") return Role::kManufacturer;
  return Fail(ErrorCode::kInvalidArgument,
              "unknown role '{}' (Administrator, Contributor, Reader, or service-wide "
              "Manufacturer)",
              name.substr(0, 32));
}

// RFC 3339 of unix seconds that may lie beyond SystemTime's range (9999-12-31 in CA certificates).
std::string FormatUnixRfc3339(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return buf;
}

Result<Tenant> FindTenant(store::Database& db, std::string_view name) {
  auto row =
      db.QueryOne("SELECT id, name, created_at FROM tenants WHERE name = ?", {std::string(name)});
  if (!row) {
    if (row.error().code() == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kNotFound, "no tenant '{}'", name.substr(0, kMaxNameBytes));
    }
    return Fail(row.error());
  }
  MOAT_ASSIGN_OR_RETURN(std::string id, row->Text(0));
  MOAT_ASSIGN_OR_RETURN(std::string tname, row->Text(1));
  MOAT_ASSIGN_OR_RETURN(int64_t created, row->Int(2));
  return Tenant{id, tname, created};
}

Result<Tenant> FindCallersTenant(store::Database& db, const Caller& caller,
                                 std::string_view path_segment) {
  MOAT_ASSIGN_OR_RETURN(std::string name, DecodePathSegment(path_segment));
  auto tenant = FindTenant(db, name);
  if (!tenant && tenant.error().code() != ErrorCode::kNotFound) return tenant;
  if (!tenant || !caller.RoleIn(tenant->id)) {
    return Fail(ErrorCode::kNotFound, "no tenant {}", formats::QuoteForMessage(name));
  }
  return tenant;
}

Result<void> AuditAs(store::Session& s, int64_t at, const Caller* caller,
                     std::string_view tenant_id, std::string_view action, std::string_view target,
                     std::string_view outcome, std::string_view detail) {
  std::optional<AuditActor> actor;
  if (caller != nullptr) actor = AuditActor{caller->id, caller->name};
  return AppendAudit(s, {.at = at,
                         .actor = actor,
                         .tenant_id = tenant_id,
                         .action = action,
                         .target = target,
                         .outcome = outcome,
                         .detail = detail});
}

Api::Api(store::Database& db, const ServicePki& pki, const Clock& clock, Random& random,
         TenantCaCreated on_tenant_ca, std::filesystem::path image_dir)
    : db_(db),
      pki_(pki),
      clock_(clock),
      random_(random),
      on_tenant_ca_(std::move(on_tenant_ca)),
      repositories_(db, pki),
      device_api_(db, pki, clock, repositories_, image_dir),
      fleet_(db, clock, random, image_dir, repositories_),
      deployments_(db, repositories_, clock, random) {}

namespace {

Result<Api::Caller> Authenticate(store::Database& db, const HttpRequest& req) {
  if (!req.client_certificate) {
    return Fail(ErrorCode::kUnauthenticated,
                "this endpoint needs a client certificate (mutual TLS); none was presented");
  }
  std::string fp = HexEncode(req.client_certificate->Fingerprint());
  auto row =
      db.QueryOne("SELECT id, name, revoked_at FROM operators WHERE certificate_sha256 = ?", {fp});
  if (!row) {
    if (row.error().code() == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kUnauthenticated,
                  "the client certificate (sha256 {}) does not belong to an operator", fp);
    }
    return Fail(row.error());
  }
  if (!row->IsNull(2)) {
    return Fail(ErrorCode::kUnauthenticated, "the client certificate (sha256 {}) was revoked", fp);
  }
  Api::Caller caller;
  MOAT_ASSIGN_OR_RETURN(caller.id, row->Text(0));
  MOAT_ASSIGN_OR_RETURN(caller.name, row->Text(1));
  MOAT_ASSIGN_OR_RETURN(auto roles, db.Query("SELECT scope, role FROM role_assignments WHERE "
                                             "operator_id = ? ORDER BY scope",
                                             {caller.id}));
  for (const auto& r : roles) {
    MOAT_ASSIGN_OR_RETURN(std::string scope, r.Text(0));
    MOAT_ASSIGN_OR_RETURN(std::string role_name, r.Text(1));
    MOAT_ASSIGN_OR_RETURN(Role role, ParseRole(role_name));
    caller.roles.emplace_back(scope, role);
  }
  return caller;
}

}  // namespace

HttpResponse Api::Handle(const HttpRequest& req) {
  const auto seg = Segments(req.path);
  if (req.path == "/healthz") {
    if (req.method != "GET" && req.method != "HEAD") {
      return net::Problem(405, "method-not-allowed", "Method not allowed", "use GET /healthz");
    }
    return JsonResponse(200, {{"status", "ok"}});
  }
  if (!seg.empty() && seg[0] == "device") return device_api_.Handle(req);
  if (seg.size() < 2 || seg[0] != "api" || seg[1] != "v1") {
    return net::Problem(404, "not-found", "Not found",
                        fmt::format("no endpoint {}", req.path.substr(0, 128)));
  }
  auto caller = Authenticate(db_, req);
  if (!caller) return ErrorResponse(caller.error());

  const int64_t now = store::UnixSeconds(clock_.Now());
  auto audit = [&](std::string_view tenant_id, std::string_view action, std::string_view target,
                   std::string_view outcome, std::string_view detail) {
    auto r = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_TRY(AuditAs(s, now, &*caller, tenant_id, action, target, outcome, detail));
      return Ok();
    });
    if (!r) log::Error("audit log write failed: {}", r.error().message());
  };
  auto forbidden = [&](std::string_view tenant_id, std::string_view action, std::string_view target,
                       std::string_view why) {
    audit(tenant_id, action, target, "denied", why);
    return ErrorResponse(Error(ErrorCode::kPermissionDenied, std::string(why)));
  };

  // GET /api/v1/whoami
  if (seg.size() == 3 && seg[2] == "whoami") {
    if (req.method != "GET") return MethodNotAllowed(req);
    Json roles = Json::array();
    for (const auto& [scope, role] : caller->roles) {
      std::string tenant_name = "*";
      if (scope != kServiceScope) {
        auto t = db_.QueryOne("SELECT name FROM tenants WHERE id = ?", {scope});
        if (t) tenant_name = *t->Text(0);
      }
      roles.push_back({{"tenant", tenant_name}, {"role", RoleName(role)}});
    }
    return JsonResponse(200, {{"id", caller->id}, {"name", caller->name}, {"roles", roles}});
  }

  // /api/v1/tenants
  if (seg.size() == 3 && seg[2] == "tenants") {
    if (req.method == "GET") {
      auto rows = db_.Query("SELECT id, name, created_at FROM tenants ORDER BY name");
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) {
        std::string id = *r.Text(0);
        if (!caller->RoleIn(id)) continue;  // tenants the caller cannot see do not exist for it
        list.push_back({{"id", id},
                        {"name", *r.Text(1)},
                        {"created_at", FormatRfc3339(store::FromUnixSeconds(*r.Int(2)))},
                        {"role", RoleName(*caller->RoleIn(id))}});
      }
      return JsonResponse(200, {{"tenants", list}});
    }
    if (req.method != "POST") return MethodNotAllowed(req);
    auto body = ParseBody(req);
    if (!body) return ErrorResponse(body.error());
    formats::ObjectReader reader(*body, "body");
    auto name = reader.RequiredString("name", kMaxNameBytes * 2);
    if (!name) return ErrorResponse(name.error());
    if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
    if (auto v = ValidateName("tenant", *name); !v) return ErrorResponse(v.error());
    if (!caller->IsServiceAdministrator()) {
      return forbidden("", "tenant.create", *name,
                       "creating tenants needs the service-wide Administrator role");
    }
    std::string tenant_id = random_.NewUuid();
    auto ca = pki_.CreateTenantCa(*name, clock_.Now() - pki_.lifetimes().backdate);
    if (!ca) return ErrorResponse(ca.error());
    auto sealed = pki_.SealKey(ca->key, ca->certificate.SerialHex());
    if (!sealed) return ErrorResponse(sealed.error());
    auto created = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(int64_t n,
                            s.Execute("INSERT INTO tenants (id, name, created_at) VALUES "
                                      "(?, ?, ?) ON CONFLICT DO NOTHING",
                                      {tenant_id, *name, now}));
      if (n == 0) {
        return Fail(ErrorCode::kAlreadyExists, "a tenant named '{}' already exists", *name);
      }
      MOAT_TRY(s.Execute(
          "INSERT INTO tenant_cas (serial_hex, tenant_id, certificate_pem, sealed_key, not_before, "
          "not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
          {ca->certificate.SerialHex(), tenant_id, ca->certificate.ToPem(), *sealed,
           store::UnixSeconds(ca->certificate.NotBefore()),
           store::UnixSeconds(ca->certificate.NotAfter()), now}));
      MOAT_TRY(AuditAs(s, now, &*caller, tenant_id, "tenant.create", *name, "ok",
                       fmt::format("tenant CA serial {}", ca->certificate.SerialHex())));
      return Ok();
    });
    if (!created) {
      audit("", "tenant.create", *name, "failed", created.error().message());
      return ErrorResponse(created.error());
    }
    if (on_tenant_ca_) on_tenant_ca_(ca->certificate);
    return JsonResponse(201, {{"id", tenant_id},
                              {"name", *name},
                              {"ca_certificate",
                               {{"serial", ca->certificate.SerialHex()},
                                {"not_after", FormatRfc3339(ca->certificate.NotAfter())}}}});
  }

  // /api/v1/tenants/{name}/ca-certificates
  if (seg.size() == 5 && seg[2] == "tenants" && seg[4] == "ca-certificates") {
    if (req.method != "GET") return MethodNotAllowed(req);
    auto tenant = FindCallersTenant(db_, *caller, seg[3]);
    if (!tenant) return ErrorResponse(tenant.error());
    auto rows = db_.Query(
        "SELECT serial_hex, certificate_pem, not_before, not_after FROM tenant_cas WHERE tenant_id "
        "= ? "
        "ORDER BY not_before",
        {tenant->id});
    if (!rows) return ErrorResponse(rows.error());
    Json list = Json::array();
    const SystemTime t_now = clock_.Now();
    for (const auto& r : *rows) {
      SystemTime nb = store::FromUnixSeconds(*r.Int(2)), na = store::FromUnixSeconds(*r.Int(3));
      std::string status = t_now < nb ? "pending" : t_now >= na ? "expired" : "active";
      list.push_back({{"serial", *r.Text(0)},
                      {"certificate", *r.Text(1)},
                      {"not_before", FormatRfc3339(nb)},
                      {"not_after", FormatRfc3339(na)},
                      {"status", status}});
    }
    return JsonResponse(200, {{"tenant", tenant->name},
                              {"ca_certificates", list},
                              {"root_certificate", pki_.root().certificate.ToPem()}});
  }

  // /api/v1/users: operators. POST issues a certificate for a CSR with one role in one scope.
  if (seg.size() == 3 && seg[2] == "users") {
    if (req.method == "POST") {
      auto body = ParseBody(req);
      if (!body) return ErrorResponse(body.error());
      formats::ObjectReader reader(*body, "body");
      auto name = reader.RequiredString("name", kMaxNameBytes * 2);
      auto tenant_name = reader.RequiredString("tenant", kMaxNameBytes * 2);
      auto role_name = reader.RequiredString("role", 32);
      auto csr_pem = reader.RequiredString("csr", 16 * 1024);
      for (const Result<std::string>* r : {&name, &tenant_name, &role_name, &csr_pem}) {
        if (!*r) return ErrorResponse(r->error());
      }
      if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
      if (auto v = ValidateName("operator", *name); !v) return ErrorResponse(v.error());
      auto role = ParseRole(*role_name);
      if (!role) return ErrorResponse(role.error().WithContext("body.role"));
      if (*role == Role::kManufacturer && *tenant_name != kServiceScope) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                   "body.role: Manufacturer is a service-wide role (tenant '*')"));
      }
      std::string scope(kServiceScope);
      if (*tenant_name != kServiceScope) {
        auto tenant = FindTenant(db_, *tenant_name);
        if (!tenant || !caller->RoleIn(tenant->id)) {
          return ErrorResponse(Error(ErrorCode::kNotFound,
                                     fmt::format("no tenant '{}'", tenant_name->substr(0, 64))));
        }
        scope = tenant->id;
      }
      // SECURITY: only an Administrator of the scope may add operators to it.
      if (caller->RoleIn(scope) != Role::kAdministrator) {
        return forbidden(
            scope == kServiceScope ? "" : scope, "user.add", *name,
            fmt::format("adding operators to '{}' needs its Administrator role", *tenant_name));
      }
      auto csr = crypto::CertificateRequest::FromPem(*csr_pem);
      if (!csr) return ErrorResponse(csr.error().WithContext("body.csr"));
      std::string id = random_.NewUuid();
      auto cert = pki_.IssueOperatorCertificate(*csr, id, *name, clock_);
      if (!cert) {
        return ErrorResponse(cert.error().code() == ErrorCode::kVerificationFailed
                                 ? Error(ErrorCode::kInvalidArgument,
                                         "body.csr: the request's signature does not verify")
                                 : cert.error());
      }
      auto added = db_.Transact([&](store::Session& s) -> Result<void> {
        MOAT_TRY(
            s.Execute("INSERT INTO operators (id, name, certificate_sha256, certificate_serial, "
                      "created_at) VALUES (?, ?, ?, ?, ?)",
                      {id, *name, HexEncode(cert->Fingerprint()), cert->SerialHex(), now}));
        MOAT_TRY(
            s.Execute("INSERT INTO role_assignments (operator_id, scope, role) VALUES (?, ?, ?)",
                      {id, scope, std::string(RoleName(*role))}));
        MOAT_TRY(AuditAs(s, now, &*caller, scope == kServiceScope ? "" : scope, "user.add", *name,
                         "ok",
                         fmt::format("{} in {}; certificate serial {}", RoleName(*role),
                                     *tenant_name, cert->SerialHex())));
        return Ok();
      });
      if (!added) return ErrorResponse(added.error());
      return JsonResponse(201,
                          {{"id", id},
                           {"name", *name},
                           {"tenant", *tenant_name},
                           {"role", RoleName(*role)},
                           {"certificate", cert->ToPem() + pki_.operator_ca().certificate.ToPem()},
                           {"not_after", FormatRfc3339(cert->NotAfter())}});
    }
    if (req.method != "GET") return MethodNotAllowed(req);
    auto rows = db_.Query(
        "SELECT o.id, o.name, o.created_at, o.revoked_at, r.scope, r.role FROM operators o "
        "JOIN role_assignments r ON r.operator_id = o.id ORDER BY o.name, r.scope");
    if (!rows) return ErrorResponse(rows.error());
    Json list = Json::array();
    for (const auto& r : *rows) {
      std::string scope = *r.Text(4);
      // An operator is visible to the Administrators of the scopes it has roles in.
      if (caller->RoleIn(scope) != Role::kAdministrator) continue;
      std::string tenant_label = "*";
      if (scope != kServiceScope) {
        auto t = db_.QueryOne("SELECT name FROM tenants WHERE id = ?", {scope});
        if (t) tenant_label = *t->Text(0);
      }
      list.push_back({{"id", *r.Text(0)},
                      {"name", *r.Text(1)},
                      {"created_at", FormatRfc3339(store::FromUnixSeconds(*r.Int(2)))},
                      {"revoked", !r.IsNull(3)},
                      {"tenant", tenant_label},
                      {"role", *r.Text(5)}});
    }
    return JsonResponse(200, {{"users", list}});
  }

  // POST /api/v1/users/{id}/revoke
  if (seg.size() == 5 && seg[2] == "users" && seg[4] == "revoke") {
    if (req.method != "POST") return MethodNotAllowed(req);
    std::string target_id(seg[3]);
    auto roles = db_.Query("SELECT scope FROM role_assignments WHERE operator_id = ?", {target_id});
    if (!roles) return ErrorResponse(roles.error());
    // SECURITY: the caller must administer every scope the operator acts in; otherwise the
    // operator does not exist for it (404, like another tenant's objects).
    bool allowed = !roles->empty();
    for (const auto& r : *roles) {
      if (caller->RoleIn(*r.Text(0)) != Role::kAdministrator) allowed = false;
    }
    if (!allowed) {
      return ErrorResponse(
          Error(ErrorCode::kNotFound, fmt::format("no user '{}'", target_id.substr(0, 64))));
    }
    if (target_id == caller->id) {
      return ErrorResponse(Error(ErrorCode::kFailedPrecondition,
                                 "you cannot revoke your own certificate; ask another "
                                 "Administrator"));
    }
    auto revoked = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(int64_t n, s.Execute("UPDATE operators SET revoked_at = ? WHERE id = ? "
                                                 "AND revoked_at IS NULL",
                                                 {now, target_id}));
      if (n == 0)
        return Fail(ErrorCode::kFailedPrecondition, "user {} is already revoked", target_id);
      MOAT_TRY(AuditAs(s, now, &*caller, "", "user.revoke", target_id, "ok",
                       "certificate revoked; further requests are refused"));
      return Ok();
    });
    if (!revoked) return ErrorResponse(revoked.error());
    return JsonResponse(200, {{"id", target_id}, {"revoked", true}});
  }

  // GET|POST /api/v1/manufacturer-cas: the CAs that sign TPM endorsement key certificates.
  if (seg.size() == 3 && seg[2] == "manufacturer-cas") {
    if (!caller->MayRegisterDevices()) {
      return forbidden("", "manufacturer-ca", "",
                       "manufacturer CAs need the service-wide Manufacturer or Administrator "
                       "role");
    }
    if (req.method == "GET") {
      auto rows = db_.Query(
          "SELECT sha256, subject, not_after, added_at, added_by FROM manufacturer_cas ORDER BY "
          "added_at, sha256");
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) {
        list.push_back({{"sha256", *r.Text(0)},
                        {"subject", *r.Text(1)},
                        {"not_after", FormatUnixRfc3339(*r.Int(2))},
                        {"added_at", FormatRfc3339(store::FromUnixSeconds(*r.Int(3)))},
                        {"added_by", *r.Text(4)}});
      }
      return JsonResponse(200, {{"manufacturer_cas", list}});
    }
    if (req.method != "POST") return MethodNotAllowed(req);
    auto body = ParseBody(req);
    if (!body) return ErrorResponse(body.error());
    formats::ObjectReader reader(*body, "body");
    auto pem = reader.RequiredString("certificate", 64 * 1024);
    if (!pem) return ErrorResponse(pem.error());
    if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
    auto ders = crypto::CertificatesDerFromPem(*pem);
    if (!ders) return ErrorResponse(ders.error().WithContext("body.certificate"));
    Json added = Json::array();
    auto stored = db_.Transact([&](store::Session& s) -> Result<void> {
      added = Json::array();
      for (const auto& der : *ders) {
        MOAT_ASSIGN_OR_RETURN(crypto::CaCertificateInfo info, crypto::InspectCaCertificateDer(der));
        MOAT_TRY(s.Execute(
            "INSERT INTO manufacturer_cas (sha256, subject, certificate, not_after, added_at, "
            "added_by) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            {info.sha256_hex, info.subject, der, info.not_after_unix, now,
             caller->name}));
        MOAT_TRY(AuditAs(s, now, &*caller, "", "manufacturer-ca.add", info.sha256_hex, "ok",
                         info.subject));
        added.push_back({{"sha256", info.sha256_hex}, {"subject", info.subject}});
      }
      return Ok();
    });
    if (!stored) return ErrorResponse(stored.error().WithContext("body.certificate"));
    return JsonResponse(201, {{"added", added}});
  }

  // POST /api/v1/devices: manufacturer registration of a device's identity key.
  if (seg.size() == 3 && seg[2] == "devices") {
    if (req.method != "POST") return MethodNotAllowed(req);
    auto body = ParseBody(req);
    if (!body) return ErrorResponse(body.error());
    formats::ObjectReader reader(*body, "body");
    auto ek_pem = reader.OptionalString("ek_certificate", 16 * 1024);
    if (!ek_pem) return ErrorResponse(ek_pem.error());
    if (!ek_pem->empty()) {
      // A TPM device: its ID derives from the EK its certificate certifies.
      if (body->contains("public_key")) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                   "body: give public_key or ek_certificate, not both"));
      }
      if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
      auto ek = TpmDeviceFromEkCertificate(db_, *ek_pem, clock_.Now());
      if (!ek) return ErrorResponse(ek.error().WithContext("body.ek_certificate"));
      if (!caller->MayRegisterDevices()) {
        return forbidden("", "device.register", ek->device_id,
                         "registering devices needs the service-wide Manufacturer or "
                         "Administrator role");
      }
      auto registered = db_.Transact([&](store::Session& s) -> Result<void> {
        MOAT_ASSIGN_OR_RETURN(
            int64_t n,
            s.Execute("INSERT INTO devices (id, public_key, registered_at, registered_by, "
                      "ek_certificate) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      {ek->device_id, ek->ek_tpm_public, now, caller->name, ek->certificate}));
        if (n == 0)
          return Fail(ErrorCode::kAlreadyExists, "device {} is already registered", ek->device_id);
        MOAT_TRY(AuditAs(s, now, &*caller, "", "device.register", ek->device_id, "ok",
                         "TPM device (EK certificate)"));
        return Ok();
      });
      if (!registered) return ErrorResponse(registered.error());
      return JsonResponse(201, {{"id", ek->device_id}, {"tpm", true}});
    }
    auto pem = reader.RequiredString("public_key", 8 * 1024);
    if (!pem) return ErrorResponse(pem.error());
    if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
    auto key = crypto::PublicKey::FromPem(*pem);
    if (!key) return ErrorResponse(key.error().WithContext("body.public_key"));
    if (key->type() != crypto::KeyType::kEcdsaP256) {
      return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                 "body.public_key: device identity keys are ECDSA P-256"));
    }
    std::string device_id = key->FingerprintHex();
    if (!caller->MayRegisterDevices()) {
      return forbidden("", "device.register", device_id,
                       "registering devices needs the service-wide Manufacturer or "
                       "Administrator role");
    }
    auto registered = db_.Transact([&](store::Session& s) -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(
          int64_t n, s.Execute("INSERT INTO devices (id, public_key, registered_at, registered_by) "
                               "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               {device_id, key->ToDer(), now, caller->name}));
      if (n == 0)
        return Fail(ErrorCode::kAlreadyExists, "device {} is already registered", device_id);
      MOAT_TRY(AuditAs(s, now, &*caller, "", "device.register", device_id, "ok", ""));
      return Ok();
    });
    if (!registered) return ErrorResponse(registered.error());
    return JsonResponse(201, {{"id", device_id}});
  }

  // GET /api/v1/tenants/{t}/error-report[?device=&since=&limit=] (CSV) and
  // GET /api/v1/tenants/{t}/failure-buckets[?limit=]
  if (seg.size() == 5 && seg[2] == "tenants" &&
      (seg[4] == "error-report" || seg[4] == "failure-buckets")) {
    auto tenant = FindCallersTenant(db_, *caller, seg[3]);
    if (!tenant) return ErrorResponse(tenant.error());
    if (req.method != "GET") return MethodNotAllowed(req);
    if (seg[4] == "failure-buckets") {
      auto limit = ParseLimit(QueryParam(req.query, "limit"));
      if (!limit) return ErrorResponse(limit.error());
      auto rows = db_.Query(
          "SELECT id, component_id, image_id, kind, description, event_count, first_seen, "
          "last_seen, stack_signature FROM failure_buckets WHERE tenant_id = ? "
          "ORDER BY event_count DESC, last_seen DESC LIMIT ?",
          {tenant->id, *limit});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) {
        list.push_back({{"id", *r.Text(0)},
                        {"component_id", *r.Text(1)},
                        {"image_id", *r.Text(2)},
                        {"kind", *r.Text(3)},
                        {"description", *r.Text(4)},
                        {"event_count", *r.Int(5)},
                        {"first_seen", FormatRfc3339(store::FromUnixSeconds(*r.Int(6)))},
                        {"last_seen", FormatRfc3339(store::FromUnixSeconds(*r.Int(7)))},
                        {"stack_signature", *r.Text(8)}});
      }
      return JsonResponse(200, {{"tenant", tenant->name}, {"buckets", list}});
    }
    ErrorReportQuery q{.tenant_id = tenant->id};
    // Azure Sphere's report covers 14 days; ours defaults to that and goes back as far as asked.
    q.since = now - 14 * 24 * 3600;
    if (std::string since = QueryParam(req.query, "since"); !since.empty()) {
      auto t = ParseRfc3339(since);
      if (!t) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                   "since: not an RFC 3339 time such as 2026-11-01T00:00:00Z"));
      }
      q.since = store::UnixSeconds(*t);
    }
    if (std::string device = QueryParam(req.query, "device"); !device.empty()) {
      if (auto v = formats::ValidateDeviceId(device); !v) return ErrorResponse(v.error());
      q.device_id = device;
    }
    auto csv = ErrorReportCsv(db_, q);
    if (!csv) return ErrorResponse(csv.error());
    HttpResponse r;
    r.status = 200;
    r.content_type = "text/csv; charset=utf-8";
    r.body = std::move(*csv);
    return r;
  }

  // /api/v1/tenants/{t}/pcr-policies[/{id}]: which values a TPM device's quoted PCRs may hold,
  // per device group or tenant-wide (docs/service-api.md, "TPM devices").
  if (seg.size() >= 5 && seg.size() <= 6 && seg[2] == "tenants" && seg[4] == "pcr-policies") {
    auto tenant = FindCallersTenant(db_, *caller, seg[3]);
    if (!tenant) return ErrorResponse(tenant.error());
    const Role role = *caller->RoleIn(tenant->id);
    if (seg.size() == 5 && req.method == "GET") {
      auto rows = db_.Query(
          "SELECT pp.id, pp.device_group_id, pp.pcr, pp.sha256, pp.comment, pp.created_at, "
          "pp.created_by, p.name, g.name FROM pcr_policies pp LEFT JOIN device_groups g ON g.id "
          "= pp.device_group_id LEFT JOIN products p ON p.id = g.product_id WHERE pp.tenant_id = "
          "? ORDER BY p.name, g.name, pp.pcr, pp.created_at",
          {tenant->id});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) {
        const bool grouped = !r.IsNull(1);
        list.push_back({{"id", *r.Text(0)},
                        {"product", grouped ? Json(*r.Text(7)) : Json()},
                        {"device_group", grouped ? Json(*r.Text(8)) : Json()},
                        {"device_group_id", grouped ? Json(*r.Text(1)) : Json()},
                        {"pcr", *r.Int(2)},
                        {"sha256", *r.Text(3)},
                        {"comment", *r.Text(4)},
                        {"created_at", FormatRfc3339(store::FromUnixSeconds(*r.Int(5)))},
                        {"created_by", *r.Text(6)}});
      }
      return JsonResponse(200, {{"tenant", tenant->name}, {"pcr_policies", list}});
    }
    if (role != Role::kAdministrator) {
      return forbidden(tenant->id, "pcr-policy.change", "",
                       "PCR policies need the Administrator role (they decide which devices get "
                       "certificates)");
    }
    if (seg.size() == 5 && req.method == "POST") {
      auto body = ParseBody(req);
      if (!body) return ErrorResponse(body.error());
      formats::ObjectReader reader(*body, "body");
      auto pcr = reader.OptionalInt("pcr", 0, 23);
      auto sha256 = reader.RequiredString("sha256", 64);
      auto group = reader.OptionalString("device_group", 256);
      auto comment = reader.OptionalString("comment", 256);
      if (!pcr) return ErrorResponse(pcr.error());
      for (const Result<std::string>* r : {&sha256, &group, &comment}) {
        if (!*r) return ErrorResponse(r->error());
      }
      if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
      if (!*pcr) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument, "body: missing field 'pcr'"));
      }
      auto digest = HexDecode(*sha256);
      if (!digest || digest->size() != 32 || *sha256 != HexEncode(*digest)) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                   "body.sha256: not 64 lowercase hexadecimal characters"));
      }
      // device_group: "PRODUCT/GROUP" (as `moat deployment create` names a group) or the
      // group's ID. Stored as the ID, so renaming a group keeps its policy.
      std::string group_id, product_name, group_name;
      if (!group->empty()) {
        const size_t slash = group->find('/');
        auto g = slash == std::string::npos
                     ? db_.QueryOne(
                           "SELECT g.id, p.name, g.name FROM device_groups g JOIN products p ON "
                           "p.id = g.product_id WHERE g.id = ? AND p.tenant_id = ?",
                           {*group, tenant->id})
                     : db_.QueryOne(
                           "SELECT g.id, p.name, g.name FROM device_groups g JOIN products p ON "
                           "p.id = g.product_id WHERE p.name = ? AND g.name = ? AND p.tenant_id "
                           "= ?",
                           {group->substr(0, slash), group->substr(slash + 1), tenant->id});
        if (!g) {
          return ErrorResponse(
              g.error().code() == ErrorCode::kNotFound
                  ? Error(ErrorCode::kNotFound,
                          fmt::format("body.device_group: no device group {} in tenant '{}' "
                                      "(give PRODUCT/GROUP or the group's ID)",
                                      formats::QuoteForMessage(*group), tenant->name))
                  : g.error());
        }
        group_id = *g->Text(0);
        product_name = *g->Text(1);
        group_name = *g->Text(2);
      }
      std::string id = random_.NewUuid();
      auto added = db_.Transact([&](store::Session& s) -> Result<void> {
        std::vector<store::Value> values;
        values.emplace_back(id);
        values.emplace_back(tenant->id);
        values.emplace_back(group_id.empty() ? store::Value() : store::Value(group_id));
        values.emplace_back(**pcr);
        values.emplace_back(*sha256);
        values.emplace_back(*comment);
        values.emplace_back(now);
        values.emplace_back(caller->name);
        MOAT_TRY(s.Execute("INSERT INTO pcr_policies (id, tenant_id, device_group_id, pcr, "
                           "sha256, comment, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, "
                           "?, ?)",
                           values));
        MOAT_TRY(AuditAs(
            s, now, &*caller, tenant->id, "pcr-policy.add", id, "ok",
            fmt::format("PCR {} sha256 {}{}", **pcr, *sha256,
                        group_id.empty() ? ""
                                         : fmt::format(" for device group {}/{} ({})", product_name,
                                                       group_name, group_id))));
        return Ok();
      });
      if (!added) return ErrorResponse(added.error());
      return JsonResponse(201, {{"id", id},
                                {"pcr", **pcr},
                                {"sha256", *sha256},
                                {"product", group_id.empty() ? Json() : Json(product_name)},
                                {"device_group", group_id.empty() ? Json() : Json(group_name)},
                                {"device_group_id", group_id.empty() ? Json() : Json(group_id)}});
    }
    if (seg.size() == 6 && req.method == "DELETE") {
      std::string id(seg[5].substr(0, 64));
      auto removed = db_.Transact([&](store::Session& s) -> Result<void> {
        MOAT_ASSIGN_OR_RETURN(int64_t n,
                              s.Execute("DELETE FROM pcr_policies WHERE id = ? AND tenant_id = ?",
                                        {id, tenant->id}));
        if (n == 0) return Fail(ErrorCode::kNotFound, "no PCR policy {} in tenant '{}'", id,
                                tenant->name);
        MOAT_TRY(AuditAs(s, now, &*caller, tenant->id, "pcr-policy.remove", id, "ok", ""));
        return Ok();
      });
      if (!removed) return ErrorResponse(removed.error());
      return JsonResponse(200, {{"id", id}, {"removed", true}});
    }
    return MethodNotAllowed(req);
  }

  // /api/v1/tenants/{t}/reference-values[/{id}] and /api/v1/tenants/{t}/security-events
  if (seg.size() >= 5 && seg[2] == "tenants" &&
      (seg[4] == "reference-values" || seg[4] == "security-events")) {
    auto tenant = FindCallersTenant(db_, *caller, seg[3]);
    if (!tenant) return ErrorResponse(tenant.error());
    const Role role = *caller->RoleIn(tenant->id);
    if (seg[4] == "security-events") {
      if (seg.size() != 5) return ErrorResponse(Error(ErrorCode::kNotFound, "no such endpoint"));
      if (req.method != "GET") return MethodNotAllowed(req);
      auto limit = ParseLimit(QueryParam(req.query, "limit"));
      if (!limit) return ErrorResponse(limit.error());
      auto rows = db_.Query(
          "SELECT seq, at, device_id, kind, detail FROM security_events WHERE tenant_id = ? "
          "ORDER BY seq DESC LIMIT ?",
          {tenant->id, *limit});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) {
        list.push_back({{"seq", *r.Int(0)},
                        {"at", FormatRfc3339(store::FromUnixSeconds(*r.Int(1)))},
                        {"device_id", *r.Text(2)},
                        {"kind", *r.Text(3)},
                        {"detail", *r.Text(4)}});
      }
      return JsonResponse(200, {{"tenant", tenant->name}, {"security_events", list}});
    }
    if (seg.size() == 5 && req.method == "GET") {
      auto rows = db_.Query(
          "SELECT id, kind, name, sha256, comment, created_at, created_by FROM reference_values "
          "WHERE tenant_id = ? ORDER BY kind, name, created_at",
          {tenant->id});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) {
        list.push_back({{"id", *r.Text(0)},
                        {"kind", *r.Text(1)},
                        {"name", *r.Text(2)},
                        {"sha256", *r.Text(3)},
                        {"comment", *r.Text(4)},
                        {"created_at", FormatRfc3339(store::FromUnixSeconds(*r.Int(5)))},
                        {"created_by", *r.Text(6)}});
      }
      return JsonResponse(200, {{"tenant", tenant->name}, {"reference_values", list}});
    }
    if (seg.size() == 5 && req.method == "POST") {
      auto body = ParseBody(req);
      if (!body) return ErrorResponse(body.error());
      formats::ObjectReader reader(*body, "body");
      auto kind = reader.RequiredString("kind", 16);
      auto name = reader.RequiredString("name", 128);
      auto sha256 = reader.RequiredString("sha256", 64);
      auto comment = reader.OptionalString("comment", 256);
      for (const Result<std::string>* r : {&kind, &name, &sha256, &comment}) {
        if (!*r) return ErrorResponse(r->error());
      }
      if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
      if (*kind != "boot" && *kind != "os" && *kind != "app") {
        return ErrorResponse(
            Error(ErrorCode::kInvalidArgument,
                  fmt::format("body.kind: '{}' is not boot, os or app", kind->substr(0, 16))));
      }
      if (name->empty()) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument, "body.name: must not be empty"));
      }
      auto digest = HexDecode(*sha256);
      if (!digest || digest->size() != 32 || *sha256 != HexEncode(*digest)) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                   "body.sha256: not 64 lowercase hexadecimal characters"));
      }
      if (role != Role::kAdministrator) {
        return forbidden(tenant->id, "reference-value.add", *name,
                         "adding reference values needs the Administrator role (they decide "
                         "which devices get certificates)");
      }
      std::string id = random_.NewUuid();
      auto added = db_.Transact([&](store::Session& s) -> Result<void> {
        MOAT_ASSIGN_OR_RETURN(
            int64_t n,
            s.Execute("INSERT INTO reference_values (id, tenant_id, kind, name, sha256, comment, "
                      "created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT DO NOTHING",
                      {id, tenant->id, *kind, *name, *sha256, *comment, now, caller->name}));
        if (n == 0) {
          return Fail(ErrorCode::kAlreadyExists, "{} '{}' already has the reference value {}",
                      *kind, *name, *sha256);
        }
        MOAT_TRY(AuditAs(s, now, &*caller, tenant->id, "reference-value.add", *name, "ok",
                         fmt::format("{} sha256 {}", *kind, *sha256)));
        return Ok();
      });
      if (!added) return ErrorResponse(added.error());
      return JsonResponse(201, {{"id", id}, {"kind", *kind}, {"name", *name}, {"sha256", *sha256}});
    }
    if (seg.size() == 6 && req.method == "DELETE") {
      std::string id(seg[5].substr(0, 64));
      if (role != Role::kAdministrator) {
        return forbidden(tenant->id, "reference-value.remove", id,
                         "removing reference values needs the Administrator role");
      }
      auto removed = db_.Transact([&](store::Session& s) -> Result<void> {
        auto row = s.QueryOne(
            "SELECT kind, name, sha256 FROM reference_values WHERE id = ? AND tenant_id = ?",
            {id, tenant->id});
        if (!row) {
          return row.error().code() == ErrorCode::kNotFound
                     ? Fail(ErrorCode::kNotFound, "no reference value {} in tenant '{}'", id,
                            tenant->name)
                     : Fail(row.error());
        }
        MOAT_TRY(s.Execute("DELETE FROM reference_values WHERE id = ?", {id}));
        MOAT_TRY(AuditAs(s, now, &*caller, tenant->id, "reference-value.remove", *row->Text(1),
                         "ok", fmt::format("{} sha256 {}", *row->Text(0), *row->Text(2))));
        return Ok();
      });
      if (!removed) return ErrorResponse(removed.error());
      return JsonResponse(200, {{"id", id}, {"removed", true}});
    }
    return MethodNotAllowed(req);
  }

  // Products, device groups, image-signing keys, images, and moving a device between groups.
  // Deployments, root rotation and a device's deployment status (before FleetApi, which owns
  // the rest of /products/...).
  if (DeploymentApi::Routes(req, seg)) return deployments_.Handle(req, *caller, seg);
  if (FleetApi::Routes(req, seg)) return fleet_.Handle(req, *caller, seg);

  // /api/v1/tenants/{t}/devices[/{id}[/claim|/transfer|/accept-transfer]]
  if (seg.size() >= 5 && seg[2] == "tenants" && seg[4] == "devices") {
    auto tenant = FindCallersTenant(db_, *caller, seg[3]);
    if (!tenant) return ErrorResponse(tenant.error());
    const Role role = *caller->RoleIn(tenant->id);
    // What the device's last attestation measured (written by DeviceApi, so it parses).
    auto measured_images = [](const store::Row& r) {
      if (r.IsNull(7)) return Json::array();
      auto j = ParseJson(*r.Text(7), "measured_images");
      return j && j->is_array() ? *j : Json::array();
    };
    auto device_json = [&](const store::Row& r) {
      auto opt_time = [&](size_t i) {
        return r.IsNull(i) ? Json(nullptr) : Json(FormatRfc3339(store::FromUnixSeconds(*r.Int(i))));
      };
      return Json{{"id", *r.Text(0)},
                  {"claimed_at", opt_time(1)},
                  {"last_seen", opt_time(2)},
                  {"os_version", r.IsNull(3) ? Json(nullptr) : Json(*r.Text(3))},
                  {"certificate_not_after", opt_time(4)},
                  {"last_attestation_at", opt_time(5)},
                  {"last_attestation_result", r.IsNull(6) ? Json(nullptr) : Json(*r.Text(6))},
                  {"update_certificate_not_after", opt_time(8)},
                  {"installed_images", measured_images(r)},
                  {"product", r.IsNull(9) ? Json(nullptr) : Json(*r.Text(9))},
                  {"device_group", r.IsNull(10) ? Json(nullptr) : Json(*r.Text(10))}};
    };
    constexpr const char* kDeviceColumns =
        "SELECT id, claimed_at, last_seen, os_version, certificate_not_after, "
        "last_attestation_at, last_attestation_result, measured_images, "
        "update_certificate_not_after, "
        "(SELECT p.name FROM device_groups g JOIN products p ON p.id = g.product_id "
        "WHERE g.id = devices.device_group_id), "
        "(SELECT g.name FROM device_groups g WHERE g.id = devices.device_group_id) "
        "FROM devices ";
    if (seg.size() == 5) {
      if (req.method != "GET") return MethodNotAllowed(req);
      auto rows =
          db_.Query(std::string(kDeviceColumns) + "WHERE tenant_id = ? ORDER BY id", {tenant->id});
      if (!rows) return ErrorResponse(rows.error());
      Json list = Json::array();
      for (const auto& r : *rows) list.push_back(device_json(r));
      return JsonResponse(200, {{"tenant", tenant->name}, {"devices", list}});
    }
    std::string device_id(seg[5]);
    if (auto v = formats::ValidateDeviceId(device_id); !v) return ErrorResponse(v.error());
    auto not_found = [&] {
      return ErrorResponse(Error(ErrorCode::kNotFound, fmt::format("no device {} in tenant '{}'",
                                                                   device_id, tenant->name)));
    };
    if (seg.size() == 6) {
      if (req.method != "GET") return MethodNotAllowed(req);
      auto row = db_.QueryOne(std::string(kDeviceColumns) + "WHERE id = ? AND tenant_id = ?",
                              {device_id, tenant->id});
      if (!row)
        return row.error().code() == ErrorCode::kNotFound ? not_found()
                                                          : ErrorResponse(row.error());
      Json j = device_json(*row);
      j["tenant"] = tenant->name;
      auto transfer = db_.QueryOne(
          "SELECT t.name FROM device_transfers d JOIN tenants t ON t.id = d.to_tenant "
          "WHERE d.device_id = ?",
          {device_id});
      j["pending_transfer_to"] = transfer ? Json(*transfer->Text(0)) : Json(nullptr);
      // Installed (as the device last reported) versus targeted (its group's newest deployment).
      auto status = DeploymentStatusJson(db_, tenant->id, device_id);
      if (!status) return ErrorResponse(status.error());
      j["deployment_status"] = std::move(*status);
      return JsonResponse(200, j);
    }
    if (seg.size() != 7 || req.method != "POST") return MethodNotAllowed(req);
    const std::string_view action = seg[6];
    if (action == "claim") {
      if (role < Role::kContributor) {
        return forbidden(tenant->id, "device.claim", device_id,
                         "claiming devices needs the Contributor or Administrator role");
      }
      auto claimed = db_.Transact([&](store::Session& s) -> Result<void> {
        auto row = s.QueryOne("SELECT tenant_id FROM devices WHERE id = ?", {device_id});
        if (!row) {
          if (row.error().code() == ErrorCode::kNotFound) {
            return Fail(ErrorCode::kNotFound,
                        "device {} is not registered; its manufacturer registers it first "
                        "(moat device register)",
                        device_id);
          }
          return Fail(row.error());
        }
        if (!row->IsNull(0)) {
          std::string owner = *row->Text(0);
          if (owner == tenant->id) {
            return Fail(ErrorCode::kAlreadyExists, "device {} is already claimed by '{}'",
                        device_id, tenant->name);
          }
          return Fail(ErrorCode::kFailedPrecondition,
                      "device {} belongs to another tenant; its Administrator must transfer it",
                      device_id);
        }
        MOAT_TRY(s.Execute("UPDATE devices SET tenant_id = ?, claimed_at = ? WHERE id = ?",
                           {tenant->id, now, device_id}));
        MOAT_TRY(AuditAs(s, now, &*caller, tenant->id, "device.claim", device_id, "ok", ""));
        return Ok();
      });
      if (!claimed) return ErrorResponse(claimed.error());
      return JsonResponse(200, {{"id", device_id}, {"tenant", tenant->name}});
    }
    if (action == "transfer") {
      auto body = ParseBody(req);
      if (!body) return ErrorResponse(body.error());
      formats::ObjectReader reader(*body, "body");
      auto to_name = reader.RequiredString("to", kMaxNameBytes * 2);
      if (!to_name) return ErrorResponse(to_name.error());
      if (auto done = reader.NoOtherFields(); !done) return ErrorResponse(done.error());
      if (role != Role::kAdministrator) {
        return forbidden(tenant->id, "device.transfer", device_id,
                         "transferring devices needs the Administrator role");
      }
      // The receiving tenant need not be visible to the caller; a wrong name is a plain 404.
      auto to = FindTenant(db_, *to_name);
      if (!to) return ErrorResponse(to.error());
      if (to->id == tenant->id) {
        return ErrorResponse(Error(ErrorCode::kInvalidArgument,
                                   "body.to: the device already belongs to that tenant"));
      }
      auto requested = db_.Transact([&](store::Session& s) -> Result<void> {
        auto row = s.QueryOne("SELECT 1 FROM devices WHERE id = ? AND tenant_id = ?",
                              {device_id, tenant->id});
        if (!row) {
          return row.error().code() == ErrorCode::kNotFound
                     ? Fail(ErrorCode::kNotFound, "no device {} in tenant '{}'", device_id,
                            tenant->name)
                     : Fail(row.error());
        }
        MOAT_TRY(s.Execute("DELETE FROM device_transfers WHERE device_id = ?", {device_id}));
        MOAT_TRY(s.Execute(
            "INSERT INTO device_transfers (device_id, from_tenant, to_tenant, requested_by, "
            "requested_at) VALUES (?, ?, ?, ?, ?)",
            {device_id, tenant->id, to->id, caller->id, now}));
        MOAT_TRY(AuditAs(s, now, &*caller, tenant->id, "device.transfer.request", device_id, "ok",
                         fmt::format("to tenant '{}'", to->name)));
        return Ok();
      });
      if (!requested) return ErrorResponse(requested.error());
      return JsonResponse(202,
                          {{"id", device_id},
                           {"from", tenant->name},
                           {"to", to->name},
                           {"status", "waiting for an Administrator of the receiving tenant"}});
    }
    if (action == "accept-transfer") {
      if (role != Role::kAdministrator) {
        return forbidden(tenant->id, "device.transfer.accept", device_id,
                         "accepting a transfer needs the Administrator role");
      }
      auto accepted = db_.Transact([&](store::Session& s) -> Result<void> {
        auto row = s.QueryOne(
            "SELECT from_tenant FROM device_transfers WHERE device_id = ? AND to_tenant = ?",
            {device_id, tenant->id});
        if (!row) {
          return row.error().code() == ErrorCode::kNotFound
                     ? Fail(ErrorCode::kNotFound,
                            "no transfer of device {} to tenant '{}' is pending", device_id,
                            tenant->name)
                     : Fail(row.error());
        }
        std::string from = *row->Text(0);
        MOAT_ASSIGN_OR_RETURN(int64_t n,
                              // SECURITY: the device group is the old tenant's; the
                              // device leaves it (and its product's name stays private).
                              s.Execute("UPDATE devices SET tenant_id = ?, claimed_at = ?, "
                                        "device_group_id = NULL WHERE id = ? AND tenant_id = ?",
                                        {tenant->id, now, device_id, from}));
        if (n == 0) {
          return Fail(ErrorCode::kFailedPrecondition,
                      "device {} left its tenant after the transfer was requested", device_id);
        }
        MOAT_TRY(s.Execute("DELETE FROM device_transfers WHERE device_id = ?", {device_id}));
        MOAT_TRY(
            AuditAs(s, now, &*caller, tenant->id, "device.transfer.accept", device_id, "ok", ""));
        MOAT_TRY(AuditAs(s, now, &*caller, from, "device.transfer.complete", device_id, "ok",
                         fmt::format("now owned by '{}'", tenant->name)));
        return Ok();
      });
      if (!accepted) return ErrorResponse(accepted.error());
      return JsonResponse(200, {{"id", device_id}, {"tenant", tenant->name}});
    }
    return net::Problem(404, "not-found", "Not found",
                        fmt::format("no device action '{}'", action.substr(0, 32)));
  }

  // GET /api/v1/audit[?tenant=NAME][&limit=N]
  if (seg.size() == 3 && seg[2] == "audit") {
    if (req.method != "GET") return MethodNotAllowed(req);
    std::string tenant_name = QueryParam(req.query, "tenant");
    auto parsed_limit = ParseLimit(QueryParam(req.query, "limit"));
    if (!parsed_limit) return ErrorResponse(parsed_limit.error());
    const int64_t limit = *parsed_limit;
    Result<std::vector<store::Row>> rows = std::vector<store::Row>{};
    if (!tenant_name.empty()) {
      auto tenant = FindTenant(db_, tenant_name);
      if (!tenant || !caller->RoleIn(tenant->id) ||
          *caller->RoleIn(tenant->id) != Role::kAdministrator) {
        return ErrorResponse(
            Error(ErrorCode::kNotFound, fmt::format("no tenant '{}'", tenant_name)));
      }
      rows = db_.Query(
          "SELECT seq, at, operator_name, tenant_id, action, target, outcome, detail "
          "FROM audit_log WHERE tenant_id = ? ORDER BY seq DESC LIMIT ?",
          {tenant->id, limit});
    } else {
      if (!caller->IsServiceAdministrator()) {
        return forbidden("", "audit.list", "*",
                         "the whole audit log needs the service-wide Administrator role; pass "
                         "--tenant for one tenant's");
      }
      rows = db_.Query(
          "SELECT seq, at, operator_name, tenant_id, action, target, outcome, detail "
          "FROM audit_log ORDER BY seq DESC LIMIT ?",
          {limit});
    }
    if (!rows) return ErrorResponse(rows.error());
    Json list = Json::array();
    for (const auto& r : *rows) {
      list.push_back({{"seq", *r.Int(0)},
                      {"at", FormatRfc3339(store::FromUnixSeconds(*r.Int(1)))},
                      {"operator", r.IsNull(2) ? Json(nullptr) : Json(*r.Text(2))},
                      {"tenant_id", r.IsNull(3) ? Json(nullptr) : Json(*r.Text(3))},
                      {"action", *r.Text(4)},
                      {"target", *r.Text(5)},
                      {"outcome", *r.Text(6)},
                      {"detail", *r.Text(7)}});
    }
    return JsonResponse(200, {{"entries", list}});
  }

  return net::Problem(
      404, "not-found", "Not found",
      fmt::format("no endpoint {} {}", req.method.substr(0, 16), req.path.substr(0, 128)));
}

Result<crypto::Certificate> CreateFirstAdministrator(store::Database& db, const ServicePki& pki,
                                                     const Clock& clock, Random& random,
                                                     std::string_view name,
                                                     const crypto::CertificateRequest& csr) {
  MOAT_TRY(ValidateName("operator", name));
  std::string id = random.NewUuid();
  MOAT_ASSIGN_OR_RETURN(crypto::Certificate cert,
                        pki.IssueOperatorCertificate(csr, id, name, clock));
  const int64_t now = store::UnixSeconds(clock.Now());
  MOAT_TRY(db.Transact([&](store::Session& s) -> Result<void> {
    MOAT_TRY(s.Execute(
        "INSERT INTO operators (id, name, certificate_sha256, certificate_serial, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        {id, std::string(name), HexEncode(cert.Fingerprint()), cert.SerialHex(), now}));
    MOAT_TRY(
        s.Execute("INSERT INTO role_assignments (operator_id, scope, role) VALUES (?, ?, ?)",
                  {id, std::string(kServiceScope), std::string(RoleName(Role::kAdministrator))}));
    MOAT_TRY(AuditAs(s, now, nullptr, "", "operator.create", std::string(name), "ok",
                     "first service Administrator, created by moat-service init"));
    return Ok();
  }));
  return cert;
}

}  // namespace moat::service
