#include "service/service.h"

#include <sys/stat.h>

#include <condition_variable>
#include <mutex>
#include <ostream>
#include <thread>

#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "crypto/random.h"
#include "crypto/tls.h"
#include "formats/json_reader.h"
#include "formats/operator_config.h"
#include "net/https_server.h"
#include "service/api.h"
#include "service/repositories.h"
#include "service/schema.h"
#include "service/tenant_ca_rotation.h"
#include "store/sqlite.h"

namespace moat::service {
namespace {

constexpr size_t kMaxServiceConfigBytes = 64 * 1024;

struct ServiceConfig {
  std::string service_name;
  std::string listen_address;
  uint16_t port;
};

Result<ServiceConfig> LoadServiceConfig(const DataDirLayout& layout) {
  MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(layout.config(), kMaxServiceConfigBytes));
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(text, layout.config().string()));
  formats::ObjectReader r(j, layout.config().string());
  MOAT_TRY(r.status());
  ServiceConfig c;
  MOAT_ASSIGN_OR_RETURN(c.service_name, r.RequiredString("service_name", 128));
  MOAT_ASSIGN_OR_RETURN(c.listen_address, r.RequiredString("listen_address", 128));
  MOAT_ASSIGN_OR_RETURN(int64_t port, r.RequiredInt("port", 0, 65535));
  c.port = static_cast<uint16_t>(port);
  MOAT_TRY(r.NoOtherFields());
  return c;
}

Result<std::unique_ptr<store::Database>> OpenDatabase(const DataDirLayout& layout,
                                                      const Clock& clock) {
  store::SqliteOptions options{.path = layout.database(), .clock = &clock};
  return store::OpenSqlite(options, Migrations());
}

}  // namespace

// Builds the data directory under a temporary sibling name and renames it into place at the
// end, so a failure (or a crash) part-way leaves no half-initialised data directory behind.
Result<void> InitDataDir(const InitOptions& o, const Clock& clock, Random& random,
                         std::ostream& out) {
  std::error_code ec;
  const std::filesystem::path target = std::filesystem::absolute(o.data_dir, ec);
  if (std::filesystem::exists(target, ec) && !std::filesystem::is_empty(target, ec)) {
    return Fail(ErrorCode::kAlreadyExists,
                "{} already exists and is not empty; refusing to overwrite a service's data "
                "(choose a new --data-dir)",
                target.string());
  }
  MOAT_TRY(MakeDirectories(target.parent_path(), 0755));
  const std::filesystem::path staging =
      target.parent_path() /
      fmt::format(".{}.init-{}", target.filename().string(), random.NewUuid().substr(0, 8));
  MOAT_TRY(MakeDirectories(staging, 0700));
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() {
      std::error_code ignored;
      if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
    }
  } cleanup{staging};
  if (::chmod(staging.c_str(), 0700) != 0) return Fail(ErrnoError("chmod", staging, errno));
  DataDirLayout layout(staging);

  out << "Creating the service root CA, operator CA and server certificate...\n";
  MOAT_ASSIGN_OR_RETURN(ServicePki pki,
                        ServicePki::Create(o.service_name, o.server_dns, o.server_ips, clock));
  MOAT_TRY(pki.Save(layout));

  Json config = {
      {"service_name", o.service_name}, {"listen_address", o.listen_address}, {"port", o.port}};
  MOAT_TRY(
      AtomicWriteFile(layout.config(), config.dump(2) + "\n", {.mode = 0600, .exclusive = true}));

  out << "Creating the database...\n";
  {
    MOAT_ASSIGN_OR_RETURN(auto db, OpenDatabase(layout, clock));
    out << fmt::format("Creating the first administrator, '{}'...\n", o.admin_name);
    MOAT_ASSIGN_OR_RETURN(auto admin_key,
                          crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
    MOAT_ASSIGN_OR_RETURN(auto csr, crypto::CertificateRequest::Create(admin_key, o.admin_name));
    MOAT_ASSIGN_OR_RETURN(crypto::Certificate admin_cert,
                          CreateFirstAdministrator(*db, pki, clock, random, o.admin_name, csr));
    MOAT_ASSIGN_OR_RETURN(crypto::SecretString key_pem, admin_key.ToPem());
    std::string host = !o.server_dns.empty() ? o.server_dns.front() : o.server_ips.front();
    formats::OperatorConfig op{
        .service_url = fmt::format("https://{}:{}", host, o.port),
        .operator_name = o.admin_name,
        .root_certificate_pem = pki.root().certificate.ToPem(),
        .certificate_pem = admin_cert.ToPem() + pki.operator_ca().certificate.ToPem(),
        .private_key_pem = std::string(key_pem.view())};
    std::string op_json = ToJson(op).dump(2) + "\n";
    std::filesystem::path admin_path =
        o.admin_config.empty() ? staging / "admin.moat.json" : o.admin_config;
    auto written = AtomicWriteFile(admin_path, op_json, {.mode = 0600, .exclusive = true});
    crypto::Wipe(op_json);
    crypto::Wipe(op.private_key_pem);
    MOAT_TRY(written);
  }
  // An existing empty directory is replaced; rename(2) then makes the new one appear whole.
  if (std::filesystem::exists(target, ec) && ::rmdir(target.c_str()) != 0) {
    return Fail(ErrnoError("rmdir", target, errno));
  }
  if (::rename(staging.c_str(), target.c_str()) != 0) {
    return Fail(ErrnoError("rename", target, errno));
  }
  cleanup.dir.clear();
  MOAT_TRY(SyncDirectory(target.parent_path()));

  DataDirLayout final_layout(target);
  std::filesystem::path admin_path =
      o.admin_config.empty() ? target / "admin.moat.json" : o.admin_config;
  out << fmt::format(
      "\nInitialised {}.\n"
      "  root CA:        {} (give this to whoever must trust the service)\n"
      "  administrator:  {} (mode 0600: this file IS the administrator; keep it safe)\n"
      "Start the service:  moat-service run --data-dir {}\n"
      "Then, for example:  moat --config {} tenant create my-company\n",
      target.string(), final_layout.root_ca_certificate().string(), admin_path.string(),
      target.string(), admin_path.string());
  return Ok();
}

struct Service::State {
  std::unique_ptr<store::Database> db;
  std::unique_ptr<ServicePki> pki;
  std::unique_ptr<Repositories> repositories;  // for housekeeping
  const Clock* clock = nullptr;
  std::shared_ptr<crypto::TlsServerContext> tls;
  std::unique_ptr<Api> api;
  std::unique_ptr<net::HttpsServer> server;

  // Periodic housekeeping (tenant CA successors) on its own thread, woken early by Stop().
  std::thread housekeeping;
  std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;

  void StopHousekeeping() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    wake.notify_all();
    if (housekeeping.joinable()) housekeeping.join();
  }
};

namespace {

constexpr auto kHousekeepingInterval = std::chrono::hours(1);

void RunHousekeeping(Service::State& state, const Clock& clock) {
  auto issued = IssueDueTenantCaSuccessors(*state.db, *state.pki, clock);
  if (!issued) {
    log::Error("tenant CA succession failed (will retry): {}", issued.error().message());
    issued = std::vector<IssuedSuccessor>();
  }
  for (const auto& s : *issued) {
    log::Info("issued a successor CA for tenant '{}' (serial {}, valid until {})", s.tenant_name,
              s.certificate.SerialHex(), FormatRfc3339(s.certificate.NotAfter()));
    if (auto r = state.tls->AddClientIntermediate(s.certificate); !r) {
      log::Error("trusting the successor CA failed: {}", r.error().message());
    }
  }
  // Device group repositories: timestamps re-signed before they expire, even with no deployment.
  auto refreshed = state.repositories->Housekeep(clock.Now());
  if (!refreshed) {
    log::Error("repository housekeeping failed (will retry): {}", refreshed.error().message());
  } else if (*refreshed > 0) {
    log::Info("re-signed the timestamp of {} device group repositor{}", *refreshed,
              *refreshed == 1 ? "y" : "ies");
  }
}

}  // namespace

Service::Service(std::unique_ptr<State> state) : state_(std::move(state)) {}
Service::~Service() {
  if (!state_) return;
  state_->StopHousekeeping();
  if (state_->server) state_->server->Shutdown(std::chrono::milliseconds(0));
}

uint16_t Service::port() const { return state_->server->port(); }

void Service::RunHousekeeping() { moat::service::RunHousekeeping(*state_, *state_->clock); }

void Service::Shutdown(std::chrono::milliseconds grace) {
  state_->StopHousekeeping();
  state_->server->Shutdown(grace);
}

Result<std::unique_ptr<Service>> Service::Start(const RunOptions& o, const Clock& clock,
                                                Random& random) {
  DataDirLayout layout(o.data_dir);
  MOAT_ASSIGN_OR_RETURN(ServiceConfig config, LoadServiceConfig(layout));
  auto state = std::make_unique<State>();
  MOAT_ASSIGN_OR_RETURN(ServicePki pki, ServicePki::Load(layout));
  state->pki = std::make_unique<ServicePki>(std::move(pki));
  MOAT_ASSIGN_OR_RETURN(state->db, OpenDatabase(layout, clock));
  state->repositories = std::make_unique<Repositories>(*state->db, *state->pki);
  state->clock = &clock;

  crypto::TlsServerConfig tls{.certificate = state->pki->server().certificate,
                              .chain = {},
                              .key = state->pki->server().key,
                              .client_roots = {state->pki->root().certificate},
                              .client_intermediates = {state->pki->operator_ca().certificate}};
  // Devices: their update certificates, and their self-certified identity before the first
  // attestation (DeviceApi grants that one nothing but attestation).
  tls.client_usages = {crypto::ExtendedKeyUsage::kClientAuth,
                       crypto::ExtendedKeyUsage::kMoatDeviceUpdate};
  tls.accept_device_identity_certificates = true;
  MOAT_ASSIGN_OR_RETURN(auto cas, state->db->Query("SELECT certificate_pem FROM tenant_cas"));
  for (const auto& row : cas) {
    MOAT_ASSIGN_OR_RETURN(std::string pem, row.Text(0));
    MOAT_ASSIGN_OR_RETURN(crypto::Certificate ca, crypto::Certificate::FromPem(pem));
    tls.client_intermediates.push_back(ca);
  }
  MOAT_ASSIGN_OR_RETURN(state->tls, crypto::TlsServerContext::Create(tls));
  // Data directories from before the image store get the directory on their next start.
  MOAT_TRY(MakeDirectories(layout.images(), 0700));

  std::weak_ptr<crypto::TlsServerContext> weak_tls = state->tls;
  state->api = std::make_unique<Api>(
      *state->db, *state->pki, clock, random,
      [weak_tls](const crypto::Certificate& ca) {
        if (auto t = weak_tls.lock()) {
          if (auto r = t->AddClientIntermediate(ca); !r) {
            log::Error("trusting the new tenant CA failed: {}", r.error().message());
          }
        }
      },
      layout.images());
  net::HttpsServerConfig server_config;
  server_config.address = o.listen_address.empty() ? config.listen_address : o.listen_address;
  server_config.port = o.port != 0 ? o.port : config.port;
  server_config.threads = o.threads;
  // An image upload is the largest body (FleetApi::kMaxImagePackageBytes), and only
  // POST /api/v1/tenants/{t}/images may send one; every other request is held to 1 MiB before
  // its body is read (JSON bodies are further limited by ParseBody), so a device's bare identity
  // certificate cannot push 64 MiB at any route.
  server_config.max_body_bytes =
      o.max_body_bytes != 0 ? o.max_body_bytes : FleetApi::kMaxImagePackageBytes;
  server_config.body_limit_for = [](std::string_view method, std::string_view path) -> size_t {
    constexpr size_t kDefault = size_t{1} << 20;
    const bool image_upload = method == "POST" && path.starts_with("/api/v1/tenants/") &&
                              path.ends_with("/images") &&
                              std::count(path.begin(), path.end(), '/') == 5;
    return image_upload ? FleetApi::kMaxImagePackageBytes : kDefault;
  };
  Api* api = state->api.get();
  MOAT_ASSIGN_OR_RETURN(state->server, net::HttpsServer::Create(server_config, state->tls,
                                                                [api](const net::HttpRequest& r) {
                                                                  return api->Handle(r);
                                                                }));
  // Successors due while the service was down are issued before the first request.
  moat::service::RunHousekeeping(*state, clock);
  State* raw = state.get();
  state->housekeeping = std::thread([raw, &clock] {
    std::unique_lock lock(raw->mu);
    while (!raw->wake.wait_for(lock, kHousekeepingInterval, [raw] { return raw->stopping; })) {
      lock.unlock();
      moat::service::RunHousekeeping(*raw, clock);
      lock.lock();
    }
  });
  state->server->Start();
  log::Info("moat-service '{}' listening on {}:{}", config.service_name, server_config.address,
            state->server->port());
  return std::unique_ptr<Service>(new Service(std::move(state)));
}

}  // namespace moat::service
