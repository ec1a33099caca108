#include "cli/online_commands.h"

#include <cstdlib>
#include <ostream>

#include "cli/cli.h"
#include "cli/session.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/key.h"
#include "crypto/x509.h"
#include "formats/operator_config.h"
#include "net/https_client.h"

namespace moat::cli {
void RegisterOnline(CLI::App& app, Streams s, int& exit_code, std::shared_ptr<GlobalOptions> g) {
  auto json_out = [g, s](const Json& j) { s.out << j.dump(2) << "\n"; };

  // whoami
  auto* whoami = app.add_subcommand("whoami",
                                    "Show which operator the config authenticates as, "
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
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("GET", "/api/v1/tenants/" + EncodeQueryValue(*ca_tenant) +
                                                    "/ca-certificates"));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& c : j["ca_certificates"]) {
        rows.push_back(
            {Str(c, "serial"), Str(c, "status"), Str(c, "not_before"), Str(c, "not_after")});
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
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("GET", "/api/v1/tenants/" + EncodeQueryValue(*ca_tenant) +
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

  // user request|add|list|revoke, config create
  auto* user = app.add_subcommand("user", "Operators: their keys, certificates and roles");
  user->require_subcommand(1);
  auto u_name = std::make_shared<std::string>();
  auto u_dest = std::make_shared<std::string>();
  auto* request = user->add_subcommand(
      "request",
      "Offline: create your operator key (NAME.key, mode 0600) and a certificate request\n"
      "(NAME.csr) to give to an Administrator. The key never leaves this machine.");
  request->add_option("--name", *u_name, "Your operator name")->required();
  request->add_option("--destination", *u_dest, "Path prefix for .key and .csr")->required();
  request->callback([=, &exit_code] {
    Run(s, exit_code, "user request", [&]() -> Result<void> {
      std::string key_path = *u_dest + ".key", csr_path = *u_dest + ".csr";
      MOAT_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
      MOAT_ASSIGN_OR_RETURN(auto csr, crypto::CertificateRequest::Create(key, *u_name));
      MOAT_ASSIGN_OR_RETURN(crypto::SecretString pem, key.ToPem());
      MOAT_TRY(AtomicWriteFile(key_path, pem.view(), {.mode = 0600, .exclusive = true}));
      MOAT_TRY(AtomicWriteFile(csr_path, csr.ToPem(), {.mode = 0644, .exclusive = true}));
      s.out << fmt::format(
          "Wrote {} (private, mode 0600) and {}.\nGive {} to an Administrator: "
          "moat user add --name {} --tenant TENANT --role ROLE --csr {}\n",
          key_path, csr_path, csr_path, *u_name, csr_path);
      return Ok();
    });
  });

  auto u_tenant = std::make_shared<std::string>();
  auto u_role = std::make_shared<std::string>();
  auto u_csr = std::make_shared<std::string>();
  auto* add = user->add_subcommand(
      "add",
      "Issue an operator certificate for a certificate request, with one role in one tenant\n"
      "(--tenant '*' for the whole service). Needs the Administrator role there.");
  add->add_option("--name", *u_name, "Operator name")->required();
  add->add_option("--tenant", *u_tenant, "Tenant name, or '*' for the whole service")->required();
  add->add_option("--role", *u_role,
                  "Administrator, Contributor or Reader; or Manufacturer (with --tenant '*')")
      ->required()
      ->check(CLI::IsMember({"Administrator", "Contributor", "Reader", "Manufacturer"}));
  add->add_option("--csr", *u_csr, "Certificate request (from moat user request)")
      ->required()
      ->check(CLI::ExistingFile);
  add->add_option("--destination", *u_dest, "Where to write the certificate chain (PEM)")
      ->required();
  add->callback([=, &exit_code] {
    Run(s, exit_code, "user add", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string csr, ReadFile(*u_csr, 16 * 1024));
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"name", *u_name}, {"tenant", *u_tenant}, {"role", *u_role}, {"csr", csr}};
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("POST", "/api/v1/users", &body));
      MOAT_TRY(AtomicWriteFile(*u_dest, Str(j, "certificate"), {.mode = 0644}));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Added {} ({}) as {} in {}; certificate valid until {} written to {}.\n",
                           Str(j, "name"), Str(j, "id"), Str(j, "role"), Str(j, "tenant"),
                           Str(j, "not_after"), *u_dest);
      return Ok();
    });
  });

  auto* ulist = user->add_subcommand("list", "List the operators in the scopes you administer");
  ulist->callback([=, &exit_code] {
    Run(s, exit_code, "user list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", "/api/v1/users"));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& u : j["users"]) {
        rows.push_back({Str(u, "name"), Str(u, "id"), Str(u, "tenant"), Str(u, "role"),
                        u.value("revoked", false) ? "revoked" : "active"});
      }
      PrintTable(s.out, {"NAME", "ID", "TENANT", "ROLE", "STATUS"}, rows);
      return Ok();
    });
  });

  auto u_id = std::make_shared<std::string>();
  auto* revoke = user->add_subcommand(
      "revoke", "Revoke an operator's certificate: from now on the service refuses it");
  revoke->add_option("id", *u_id, "Operator ID (from moat user list)")->required();
  revoke->callback([=, &exit_code] {
    Run(s, exit_code, "user revoke", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json empty = Json::object();
      MOAT_TRY(
          session.Call("POST", "/api/v1/users/" + EncodeQueryValue(*u_id) + "/revoke", &empty));
      s.out << fmt::format("Revoked {}.\n", *u_id);
      return Ok();
    });
  });

  auto* config = app.add_subcommand("config", "Operator config files");
  config->require_subcommand(1);
  auto c_url = std::make_shared<std::string>();
  auto c_root = std::make_shared<std::string>();
  auto c_cert = std::make_shared<std::string>();
  auto c_key = std::make_shared<std::string>();
  auto* create_cfg = config->add_subcommand(
      "create", "Assemble an operator config (mode 0600) from your key and issued certificate");
  create_cfg->add_option("--service-url", *c_url, "https://HOST:PORT of moat-service")->required();
  create_cfg->add_option("--root-certificate", *c_root, "The service root CA (PEM)")
      ->required()
      ->check(CLI::ExistingFile);
  create_cfg->add_option("--certificate", *c_cert, "Your certificate chain (from user add)")
      ->required()
      ->check(CLI::ExistingFile);
  create_cfg->add_option("--key", *c_key, "Your private key (from user request)")
      ->required()
      ->check(CLI::ExistingFile);
  create_cfg->add_option("--destination", *u_dest, "Config file to write")->required();
  create_cfg->callback([=, &exit_code] {
    Run(s, exit_code, "config create", [&]() -> Result<void> {
      formats::OperatorConfig c;
      c.service_url = *c_url;
      MOAT_ASSIGN_OR_RETURN(c.root_certificate_pem, ReadFile(*c_root, 16 * 1024));
      MOAT_ASSIGN_OR_RETURN(c.certificate_pem, ReadFile(*c_cert, 16 * 1024));
      MOAT_ASSIGN_OR_RETURN(c.private_key_pem, ReadFile(*c_key, 16 * 1024));
      MOAT_ASSIGN_OR_RETURN(auto certs, crypto::Certificate::ParsePemChain(c.certificate_pem));
      MOAT_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::FromPem(c.private_key_pem));
      if (!(key.public_key() == certs.front().public_key())) {
        return Fail(ErrorCode::kInvalidArgument, "{} is not the key of the certificate in {}",
                    *c_key, *c_cert);
      }
      c.operator_name = certs.front().SubjectCommonName();
      std::string text = ToJson(c).dump(2) + "\n";
      // Validate what we write with the same reader that will load it.
      MOAT_TRY(formats::ParseOperatorConfig(text));
      MOAT_TRY(AtomicWriteFile(*u_dest, text, {.mode = 0600, .exclusive = true}));
      s.out << fmt::format("Wrote {} for operator {} (mode 0600).\n", *u_dest, c.operator_name);
      return Ok();
    });
  });

  // device register|claim|list|show|transfer|accept-transfer
  auto* device =
      app.add_subcommand("device", "The device registry: registration, claims, ownership");
  device->require_subcommand(1);
  auto d_key = std::make_shared<std::string>();
  auto d_id = std::make_shared<std::string>();
  auto d_tenant = std::make_shared<std::string>();
  auto d_to = std::make_shared<std::string>();
  auto d_ek = std::make_shared<std::string>();
  auto* reg = device->add_subcommand(
      "register",
      "Manufacturer: register a device by its identity public key (PEM; the device ID is the\n"
      "lowercase hex SHA-256 of the key's DER SubjectPublicKeyInfo) or, for a TPM device, by\n"
      "its EK certificate (PEM; it must chain to a manufacturer CA, `moat manufacturer-ca add`;\n"
      "the device ID is the hex SHA-256 of the EK's TPMT_PUBLIC, as moatd computes it).");
  auto* key_opt = reg->add_option("--public-key", *d_key, "The device's identity public key (PEM)")
                      ->check(CLI::ExistingFile);
  auto* ek_opt = reg->add_option("--ek-certificate", *d_ek,
                                 "A TPM device's endorsement key certificate (PEM)")
                     ->check(CLI::ExistingFile);
  key_opt->excludes(ek_opt);
  reg->callback([=, &exit_code] {
    Run(s, exit_code, "device register", [&]() -> Result<void> {
      if (d_key->empty() == d_ek->empty()) {
        return Fail(ErrorCode::kInvalidArgument, "give --public-key or --ek-certificate");
      }
      Json body;
      if (!d_key->empty()) {
        MOAT_ASSIGN_OR_RETURN(std::string pem, ReadFile(*d_key, 8 * 1024));
        body = {{"public_key", pem}};
      } else {
        MOAT_ASSIGN_OR_RETURN(std::string pem, ReadFile(*d_ek, 16 * 1024));
        body = {{"ek_certificate", pem}};
      }
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("POST", "/api/v1/devices", &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << "Registered " << (j.value("tpm", false) ? "TPM device " : "device ")
            << Str(j, "id") << "\n";
      return Ok();
    });
  });

  // manufacturer-ca add|list
  auto* mca = app.add_subcommand(
      "manufacturer-ca",
      "The CAs that sign TPM endorsement key certificates (Manufacturer or Administrator)");
  mca->require_subcommand(1);
  auto mca_file = std::make_shared<std::string>();
  auto* mca_add = mca->add_subcommand(
      "add", "Register a manufacturer CA certificate (PEM; every certificate in the file)");
  mca_add->add_option("file", *mca_file, "CA certificate(s), PEM")
      ->required()
      ->check(CLI::ExistingFile);
  mca_add->callback([=, &exit_code] {
    Run(s, exit_code, "manufacturer-ca add", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string pem, ReadFile(*mca_file, 64 * 1024));
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"certificate", pem}};
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("POST", "/api/v1/manufacturer-cas", &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      for (const auto& a : j["added"]) {
        s.out << fmt::format("Added manufacturer CA {} ({})\n", Str(a, "subject"),
                             Str(a, "sha256"));
      }
      return Ok();
    });
  });
  auto* mca_list = mca->add_subcommand("list", "List the manufacturer CAs");
  mca_list->callback([=, &exit_code] {
    Run(s, exit_code, "manufacturer-ca list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", "/api/v1/manufacturer-cas"));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& c : j["manufacturer_cas"]) {
        rows.push_back({Str(c, "subject"), Str(c, "sha256"), Str(c, "not_after"),
                        Str(c, "added_by")});
      }
      PrintTable(s.out, {"SUBJECT", "SHA256", "NOT AFTER", "ADDED BY"}, rows);
      return Ok();
    });
  });
  auto tenant_devices = [](const std::string& t) {
    return "/api/v1/tenants/" + EncodeQueryValue(t) + "/devices";
  };
  auto* claim = device->add_subcommand("claim", "Claim a registered device into a tenant");
  claim->add_option("id", *d_id, "Device ID")->required();
  claim->add_option("--tenant", *d_tenant, "Tenant name")->required();
  claim->callback([=, &exit_code] {
    Run(s, exit_code, "device claim", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json empty = Json::object();
      MOAT_ASSIGN_OR_RETURN(
          Json j,
          session.Call("POST", tenant_devices(*d_tenant) + "/" + EncodeQueryValue(*d_id) + "/claim",
                       &empty));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Claimed device {} into {}.\n", Str(j, "id"), Str(j, "tenant"));
      return Ok();
    });
  });
  auto* dlist = device->add_subcommand("list", "List a tenant's devices");
  dlist->add_option("--tenant", *d_tenant, "Tenant name")->required();
  dlist->callback([=, &exit_code] {
    Run(s, exit_code, "device list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", tenant_devices(*d_tenant)));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& d : j["devices"]) {
        std::string group = d.value("device_group", Json()).is_null()
                                ? "-"
                                : Str(d, "product") + "/" + Str(d, "device_group");
        rows.push_back({Str(d, "id"), group, Str(d, "last_seen"), Str(d, "os_version"),
                        Str(d, "last_attestation_result"), Str(d, "certificate_not_after")});
      }
      PrintTable(
          s.out,
          {"DEVICE ID", "DEVICE GROUP", "LAST SEEN", "OS", "ATTESTATION", "CERTIFICATE UNTIL"},
          rows);
      return Ok();
    });
  });
  auto* dshow = device->add_subcommand("show", "Show one device");
  dshow->add_option("id", *d_id, "Device ID")->required();
  dshow->add_option("--tenant", *d_tenant, "Tenant name")->required();
  dshow->callback([=, &exit_code] {
    Run(s, exit_code, "device show", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("GET", tenant_devices(*d_tenant) + "/" + EncodeQueryValue(*d_id)));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      for (const char* k :
           {"id", "tenant", "product", "device_group", "claimed_at", "last_seen", "os_version",
            "certificate_not_after", "update_certificate_not_after", "last_attestation_at",
            "last_attestation_result", "pending_transfer_to"}) {
        s.out << fmt::format("{:<30} {}\n", std::string(k) + ":", Str(j, k));
      }
      s.out << fmt::format("{:<30} {}\n",
                           "installed_images:", j["installed_images"].empty() ? "-" : "");
      for (const auto& image : j["installed_images"]) {
        s.out << fmt::format("  {} {} sha256 {}\n", Str(image, "name"), Str(image, "version"),
                             Str(image, "sha256"));
      }
      if (j.contains("deployment_status")) {
        s.out << "\nInstalled (reported by the device) versus targeted (its deployment):\n";
        PrintDeploymentStatus(s.out, j["deployment_status"]);
      }
      return Ok();
    });
  });
  auto* transfer = device->add_subcommand(
      "transfer",
      "Offer a device to another tenant (Administrator of the current tenant). The receiving\n"
      "tenant's Administrator completes it with accept-transfer; until then nothing changes.");
  transfer->add_option("id", *d_id, "Device ID")->required();
  transfer->add_option("--tenant", *d_tenant, "The device's current tenant")->required();
  transfer->add_option("--to", *d_to, "The receiving tenant")->required();
  transfer->callback([=, &exit_code] {
    Run(s, exit_code, "device transfer", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"to", *d_to}};
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("POST",
                                                 tenant_devices(*d_tenant) + "/" +
                                                     EncodeQueryValue(*d_id) + "/transfer",
                                                 &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Transfer of {} from {} to {} requested; {}.\n", Str(j, "id"),
                           Str(j, "from"), Str(j, "to"), Str(j, "status"));
      return Ok();
    });
  });
  auto* accept =
      device->add_subcommand("accept-transfer", "Accept a device offered to your tenant");
  accept->add_option("id", *d_id, "Device ID")->required();
  accept->add_option("--tenant", *d_tenant, "The receiving tenant")->required();
  accept->callback([=, &exit_code] {
    Run(s, exit_code, "device accept-transfer", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json empty = Json::object();
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("POST",
                                                 tenant_devices(*d_tenant) + "/" +
                                                     EncodeQueryValue(*d_id) + "/accept-transfer",
                                                 &empty));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Device {} now belongs to {}.\n", Str(j, "id"), Str(j, "tenant"));
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
