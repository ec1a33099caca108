#include "cli/online_commands.h"

#include <cstdlib>
#include <ostream>

#include "cli/cli.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/x509.h"
#include "formats/operator_config.h"
#include "net/https_client.h"

namespace moat::cli {
namespace {

// An operator's connection to the service.
class Session {
 public:
  static Result<Session> Open(const GlobalOptions& g) {
    std::string path = g.config;
    if (path.empty()) {
      const char* env = std::getenv("MOAT_CONFIG");
      if (env != nullptr) path = env;
    }
    if (path.empty()) {
      return Fail(ErrorCode::kInvalidArgument,
                  "no operator config: pass --config FILE or set MOAT_CONFIG (moat-service init "
                  "writes the first administrator's)");
    }
    MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(path, formats::kMaxOperatorConfigBytes));
    auto config = formats::ParseOperatorConfig(text);
    if (!config) return Fail(config.error().WithContext(path));
    MOAT_ASSIGN_OR_RETURN(auto root, crypto::Certificate::FromPem(config->root_certificate_pem));
    MOAT_ASSIGN_OR_RETURN(auto certs, crypto::Certificate::ParsePemChain(config->certificate_pem));
    MOAT_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::FromPem(config->private_key_pem));
    net::HttpsClientConfig client;
    client.base_url = config->service_url;
    client.tls.server_roots = {root};
    client.tls.certificate = certs.front();
    client.tls.chain.assign(certs.begin() + 1, certs.end());
    client.tls.key = key;
    MOAT_ASSIGN_OR_RETURN(auto http, net::HttpsClient::Create(std::move(client)));
    return Session(std::move(http), config->service_url);
  }

  // Sends a request; a non-2xx answer becomes an error carrying the problem's detail.
  Result<Json> Call(std::string_view method, std::string_view path, const Json* body = nullptr) {
    std::string payload = body ? DumpJson(*body) : std::string();
    auto response = http_->Send(method, path, payload);
    if (!response) {
      return Fail(response.error().WithContext(fmt::format("{} {}", method, url_)));
    }
    auto parsed = ParseJson(response->body, "response", JsonLimits{.max_bytes = 64 << 20});
    if (response->status < 200 || response->status > 299) {
      std::string detail = parsed && parsed->contains("detail") && (*parsed)["detail"].is_string()
                               ? (*parsed)["detail"].get<std::string>()
                               : response->body.substr(0, 200);
      ErrorCode code = response->status == 404   ? ErrorCode::kNotFound
                       : response->status == 403 ? ErrorCode::kPermissionDenied
                       : response->status == 401 ? ErrorCode::kUnauthenticated
                       : response->status == 409 ? ErrorCode::kAlreadyExists
                                                 : ErrorCode::kInvalidArgument;
      return Fail(code, "{} (HTTP {})", detail, response->status);
    }
    if (!parsed) return Fail(parsed.error());
    return *parsed;
  }

 private:
  Session(std::unique_ptr<net::HttpsClient> http, std::string url)
      : http_(std::move(http)), url_(std::move(url)) {}
  std::unique_ptr<net::HttpsClient> http_;
  std::string url_;
};

template <typename Fn>
void Run(Streams s, int& exit_code, std::string_view command, Fn&& body) {
  Result<void> r = body();
  if (!r) {
    s.err << "moat " << command << ": " << r.error().message() << "\n";
    exit_code = kExitFailure;
  }
}

// Prints rows as an aligned table.
void PrintTable(std::ostream& out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < cells.size(); ++i) {
      text += cells[i];
      if (i + 1 < cells.size()) text += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    out << text << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
  if (rows.empty()) out << "(none)\n";
}

std::string Str(const Json& j, std::string_view key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string EncodeQueryValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') {
      out.push_back(c);
    } else {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return out;
}

}  // namespace

void RegisterOnline(CLI::App& app, Streams s, int& exit_code, std::shared_ptr<GlobalOptions> g) {
  auto json_out = [g, s](const Json& j) { s.out << j.dump(2) << "\n"; };

  // whoami
  auto* whoami = app.add_subcommand("whoami", "Show which operator the config authenticates as, "
                                              "and its roles");
  whoami->callback([=, &exit_code] {
    Run(s, exit_code, "whoami", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", "/api/v1/whoami"));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << "operator " << Str(j, "name") << " (" << Str(j, "id") << ")\n";
      std::vector<std::vector<std::string>> rows;
      for (const auto& r : j["roles"]) rows.push_back({Str(r, "tenant"), Str(r, "role")});
      PrintTable(s.out, {"TENANT", "ROLE"}, rows);
      return Ok();
    });
  });

  // tenant create|list
  auto* tenant = app.add_subcommand("tenant", "Create and list tenants");
  tenant->require_subcommand(1);
  auto name = std::make_shared<std::string>();
  auto* create = tenant->add_subcommand(
      "create", "Create a tenant and its certificate authority (P-256, valid 2 years)");
  create->add_option("name", *name, "Tenant name (letters, digits, space, - _ .)")->required();
  create->callback([=, &exit_code] {
    Run(s, exit_code, "tenant create", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"name", *name}};
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("POST", "/api/v1/tenants", &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Created tenant {} ({}).\n  tenant CA serial {}, valid until {}\n",
                           Str(j, "name"), Str(j, "id"), Str(j["ca_certificate"], "serial"),
                           Str(j["ca_certificate"], "not_after"));
      return Ok();
    });
  });
  auto* list = tenant->add_subcommand("list", "List the tenants you have a role in");
  list->callback([=, &exit_code] {
    Run(s, exit_code, "tenant list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", "/api/v1/tenants"));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& t : j["tenants"]) {
        rows.push_back({Str(t, "name"), Str(t, "id"), Str(t, "role"), Str(t, "created_at")});
      }
      PrintTable(s.out, {"NAME", "ID", "YOUR ROLE", "CREATED"}, rows);
      return Ok();
    });
  });

  // ca-certificate list|download
  auto* ca = app.add_subcommand("ca-certificate", "A tenant's certificate authorities");
  ca->require_subcommand(1);
  auto ca_tenant = std::make_shared<std::string>();
  auto* ca_list = ca->add_subcommand("list", "List a tenant's CA certificates");
  ca_list->add_option("--tenant", *ca_tenant, "Tenant name")->required();
  ca_list->callback([=, &exit_code] {
    Run(s, exit_code, "ca-certificate list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", "/api/v1/tenants/" +
                                                            EncodeQueryValue(*ca_tenant) +
                                                            "/ca-certificates"));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& c : j["ca_certificates"]) {
        rows.push_back({Str(c, "serial"), Str(c, "status"), Str(c, "not_before"),
                        Str(c, "not_after")});
      }
      PrintTable(s.out, {"SERIAL", "STATUS", "NOT BEFORE", "NOT AFTER"}, rows);
      return Ok();
    });
  });
  auto dl_dest = std::make_shared<std::string>();
  auto dl_chain = std::make_shared<bool>(false);
  auto dl_format = std::make_shared<std::string>("pem");
  auto* dl = ca->add_subcommand(
      "download",
      "Download a tenant's CA certificates (every one not expired: during a successor's overlap\n"
      "relying parties must trust both). --chain appends the service root.");
  dl->add_option("--tenant", *ca_tenant, "Tenant name")->required();
  dl->add_option("--destination", *dl_dest, "File to write")->required();
  dl->add_flag("--chain", *dl_chain, "Include the service root CA");
  dl->add_option("--format", *dl_format, "pem or pkcs7 (DER)")
      ->check(CLI::IsMember({"pem", "pkcs7"}))
      ->capture_default_str();
  dl->callback([=, &exit_code] {
    Run(s, exit_code, "ca-certificate download", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", "/api/v1/tenants/" +
                                                            EncodeQueryValue(*ca_tenant) +
                                                            "/ca-certificates"));
      std::vector<crypto::Certificate> certs;
      for (const auto& c : j["ca_certificates"]) {
        if (Str(c, "status") == "expired") continue;
        MOAT_ASSIGN_OR_RETURN(auto cert, crypto::Certificate::FromPem(Str(c, "certificate")));
        certs.push_back(cert);
      }
      if (*dl_chain) {
        MOAT_ASSIGN_OR_RETURN(auto root, crypto::Certificate::FromPem(Str(j, "root_certificate")));
        certs.push_back(root);
      }
      if (*dl_format == "pkcs7") {
        MOAT_ASSIGN_OR_RETURN(auto der, crypto::CertificatesToPkcs7Der(certs));
        MOAT_TRY(AtomicWriteFile(*dl_dest, der));
      } else {
        std::string pem;
        for (const auto& c : certs) pem += c.ToPem();
        MOAT_TRY(AtomicWriteFile(*dl_dest, pem));
      }
      s.out << fmt::format("Wrote {} certificate(s) to {} ({}).\n", certs.size(), *dl_dest,
                           *dl_format);
      return Ok();
    });
  });

  // audit list
  auto* audit = app.add_subcommand("audit", "The audit log of operator actions");
  audit->require_subcommand(1);
  auto audit_tenant = std::make_shared<std::string>();
  auto audit_limit = std::make_shared<int>(50);
  auto* audit_list = audit->add_subcommand("list", "Show the newest audit entries");
  audit_list->add_option("--tenant", *audit_tenant,
                         "Only this tenant's entries (needs its Administrator role)");
  audit_list->add_option("--limit", *audit_limit, "How many entries (1..1000)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  audit_list->callback([=, &exit_code] {
    Run(s, exit_code, "audit list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      std::string path = fmt::format("/api/v1/audit?limit={}", *audit_limit);
      if (!audit_tenant->empty()) path += "&tenant=" + EncodeQueryValue(*audit_tenant);
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", path));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : j["entries"]) {
        rows.push_back({Str(e, "seq"), Str(e, "at"), Str(e, "operator"), Str(e, "action"),
                        Str(e, "target"), Str(e, "outcome"), Str(e, "detail")});
      }
      PrintTable(s.out, {"#", "TIME", "OPERATOR", "ACTION", "TARGET", "OUTCOME", "DETAIL"}, rows);
      return Ok();
    });
  });
}

}  // namespace moat::cli
