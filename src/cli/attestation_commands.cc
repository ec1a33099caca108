// moat reference-value add|list|remove, moat security-event list.
#include "cli/online_commands.h"
#include "cli/session.h"
#include "core/encoding.h"
#include "core/file.h"
#include "crypto/digest.h"

namespace moat::cli {
namespace {

std::string TenantPath(const std::string& tenant, std::string_view rest) {
  return "/api/v1/tenants/" + EncodeQueryValue(tenant) + std::string(rest);
}

}  // namespace

void RegisterAttestation(CLI::App& app, Streams s, int& exit_code,
                         std::shared_ptr<GlobalOptions> g) {
  auto json_out = [s](const Json& j) { s.out << j.dump(2) << "\n"; };

  auto* rv = app.add_subcommand(
      "reference-value",
      "Known-good measurements. A device gets a client certificate only if every entry of its\n"
      "measurement log (boot chain, OS, each installed app image) matches one of its tenant's\n"
      "reference values, and the log measures the OS.");
  rv->require_subcommand(1);
  struct Options {
    std::string tenant, kind, name, sha256, file, comment, id;
    int limit = 50;
  };
  auto o = std::make_shared<Options>();

  auto* add = rv->add_subcommand(
      "add",
      "Vouch for a measurement (Administrator). Give the digest with --sha256, or let moat\n"
      "hash the artefact with --file (for an app: its image package file as deployed).\n"
      "Example: moat reference-value add --tenant acme --kind os --name moat-linux --file os.img");
  add->add_option("--tenant", o->tenant, "Tenant name")->required();
  add->add_option("--kind", o->kind, "boot, os or app")
      ->required()
      ->check(CLI::IsMember({"boot", "os", "app"}));
  add->add_option("--name", o->name,
                  "What the device calls it in its log: the boot stage, the OS name, or the "
                  "app's component ID")
      ->required();
  auto* sha = add->add_option("--sha256", o->sha256, "The digest, 64 lowercase hex digits");
  auto* file =
      add->add_option("--file", o->file, "Hash this file instead")->check(CLI::ExistingFile);
  sha->excludes(file);
  add->add_option("--comment", o->comment, "Why this value is good (shown in lists)");
  add->callback([=, &exit_code] {
    Run(s, exit_code, "reference-value add", [&]() -> Result<void> {
      std::string digest = o->sha256;
      if (!o->file.empty()) {
        MOAT_ASSIGN_OR_RETURN(crypto::Sha256Digest d, crypto::Sha256OfFile(o->file));
        digest = HexEncode(d);
      } else if (digest.empty()) {
        return Fail(ErrorCode::kInvalidArgument, "give the digest with --sha256 or a --file");
      }
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"kind", o->kind}, {"name", o->name}, {"sha256", digest}};
      if (!o->comment.empty()) body["comment"] = o->comment;
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("POST", TenantPath(o->tenant, "/reference-values"), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Added reference value {}: {} '{}' sha256 {}\n", Str(j, "id"),
                           Str(j, "kind"), Str(j, "name"), Str(j, "sha256"));
      return Ok();
    });
  });

  auto* list = rv->add_subcommand("list", "List a tenant's reference values");
  list->add_option("--tenant", o->tenant, "Tenant name")->required();
  list->callback([=, &exit_code] {
    Run(s, exit_code, "reference-value list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("GET", TenantPath(o->tenant, "/reference-values")));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& v : j["reference_values"]) {
        rows.push_back(
            {Str(v, "id"), Str(v, "kind"), Str(v, "name"), Str(v, "sha256"), Str(v, "comment")});
      }
      PrintTable(s.out, {"ID", "KIND", "NAME", "SHA256", "COMMENT"}, rows);
      return Ok();
    });
  });

  auto* remove = rv->add_subcommand(
      "remove",
      "Stop vouching for a measurement (Administrator). Devices still running it keep their\n"
      "certificate until it expires (at most 24 h) and then get an update certificate only.");
  remove->add_option("id", o->id, "Reference value ID (from list)")->required();
  remove->add_option("--tenant", o->tenant, "Tenant name")->required();
  remove->callback([=, &exit_code] {
    Run(s, exit_code, "reference-value remove", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("DELETE", TenantPath(o->tenant, "/reference-values/" +
                                                                   EncodeQueryValue(o->id))));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << "Removed reference value " << Str(j, "id") << "\n";
      return Ok();
    });
  });

  // pcr-policy add|list|remove: values TPM devices' quoted PCRs must hold.
  auto* pp = app.add_subcommand(
      "pcr-policy",
      "PCR policy for TPM devices: a quoted TPM PCR (SHA-256 bank) must hold one of the values\n"
      "listed for it, tenant-wide or for one device group (docs/service-api.md, TPM devices).");
  pp->require_subcommand(1);
  struct PcrOptions {
    std::string tenant, sha256, group, comment, id;
    int pcr = -1;
  };
  auto po = std::make_shared<PcrOptions>();
  auto* pp_add = pp->add_subcommand("add", "Allow a value for a PCR (Administrator)");
  pp_add->add_option("--tenant", po->tenant, "Tenant name")->required();
  pp_add->add_option("--pcr", po->pcr, "TPM PCR, 0-23")->required()->check(CLI::Range(0, 23));
  pp_add->add_option("--sha256", po->sha256, "The value, 64 lowercase hex digits")->required();
  pp_add->add_option("--device-group", po->group,
                     "Only for this device group: PRODUCT/GROUP, e.g. \"Thermostat/Field Test\" "
                     "(or the group's ID)");
  pp_add->add_option("--comment", po->comment, "Why this value is good");
  pp_add->callback([=, &exit_code] {
    Run(s, exit_code, "pcr-policy add", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"pcr", po->pcr}, {"sha256", po->sha256}};
      if (!po->group.empty()) body["device_group"] = po->group;
      if (!po->comment.empty()) body["comment"] = po->comment;
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("POST", TenantPath(po->tenant, "/pcr-policies"), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format(
          "Added PCR policy {}: PCR {} sha256 {}{}\n", Str(j, "id"), po->pcr, po->sha256,
          j.value("device_group", Json()).is_string()
              ? " for device group " + Str(j, "product") + "/" + Str(j, "device_group")
              : std::string(" (whole tenant)"));
      return Ok();
    });
  });
  auto* pp_list = pp->add_subcommand("list", "List a tenant's PCR policy");
  pp_list->add_option("--tenant", po->tenant, "Tenant name")->required();
  pp_list->callback([=, &exit_code] {
    Run(s, exit_code, "pcr-policy list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", TenantPath(po->tenant, "/pcr-policies")));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& v : j["pcr_policies"]) {
        rows.push_back({Str(v, "id"), std::to_string(v.value("pcr", -1)),
                        v.value("device_group", Json()).is_string()
                            ? Str(v, "product") + "/" + Str(v, "device_group")
                            : "(tenant)",
                        Str(v, "sha256"), Str(v, "comment")});
      }
      PrintTable(s.out, {"ID", "PCR", "DEVICE GROUP", "SHA256", "COMMENT"}, rows);
      return Ok();
    });
  });
  auto* pp_remove = pp->add_subcommand("remove", "Remove a PCR policy entry (Administrator)");
  pp_remove->add_option("id", po->id, "Entry ID (from list)")->required();
  pp_remove->add_option("--tenant", po->tenant, "Tenant name")->required();
  pp_remove->callback([=, &exit_code] {
    Run(s, exit_code, "pcr-policy remove", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("DELETE", TenantPath(po->tenant, "/pcr-policies/" +
                                                                  EncodeQueryValue(po->id))));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << "Removed PCR policy " << Str(j, "id") << "\n";
      return Ok();
    });
  });

  // Failure reports: `moat tenant download-error-report` (Azure Sphere's name) and
  // `moat report buckets`.
  struct ReportOptions {
    std::string tenant, destination, device, since;
    int limit = 50;
  };
  auto ro = std::make_shared<ReportOptions>();
  CLI::App* tenant = app.get_subcommand("tenant");
  auto* dl = tenant->add_subcommand(
      "download-error-report",
      "Write a tenant's failure events as CSV with Azure Sphere's columns (Device ID, Event\n"
      "Type, Event Class, Event Count, Description, Start Time, End Time) plus Image ID, Bucket\n"
      "and Stack Signature. Default window: the last 14 days; --since goes further back.");
  dl->add_option("--tenant", ro->tenant, "Tenant name")->required();
  dl->add_option("--destination", ro->destination, "CSV file to write")->required();
  dl->add_option("--device", ro->device, "Only this device's events");
  dl->add_option("--since", ro->since, "Only events ending at or after this RFC 3339 time");
  dl->callback([=, &exit_code] {
    Run(s, exit_code, "tenant download-error-report", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      std::string path = TenantPath(ro->tenant, "/error-report");
      std::string sep = "?";
      if (!ro->device.empty()) path += sep + "device=" + EncodeQueryValue(ro->device), sep = "&";
      if (!ro->since.empty()) path += sep + "since=" + EncodeQueryValue(ro->since);
      MOAT_ASSIGN_OR_RETURN(std::string csv, session.CallRaw("GET", path));
      MOAT_TRY(AtomicWriteFile(ro->destination, csv, {.mode = 0644}));
      const auto rows = std::count(csv.begin(), csv.end(), '\n') - 1;
      s.out << fmt::format("Wrote {} event(s) to {}\n", rows < 0 ? 0 : rows, ro->destination);
      return Ok();
    });
  });

  auto* report = app.add_subcommand("report", "Failure reports grouped into crash buckets");
  report->require_subcommand(1);
  auto* buckets = report->add_subcommand(
      "buckets",
      "Crash buckets by count: one bucket per stack signature and image across all devices");
  buckets->add_option("--tenant", ro->tenant, "Tenant name")->required();
  buckets->add_option("--limit", ro->limit, "How many (1..1000)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  buckets->callback([=, &exit_code] {
    Run(s, exit_code, "report buckets", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j,
          session.Call(
              "GET", TenantPath(ro->tenant, fmt::format("/failure-buckets?limit={}", ro->limit))));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& b : j["buckets"]) {
        rows.push_back({Str(b, "event_count"), Str(b, "last_seen"), Str(b, "component_id"),
                        Str(b, "image_id"), Str(b, "description")});
      }
      PrintTable(s.out, {"COUNT", "LAST SEEN", "COMPONENT", "IMAGE", "DESCRIPTION"}, rows);
      return Ok();
    });
  });

  auto* se = app.add_subcommand(
      "security-event",
      "What devices did that needs an operator's eye: failed attestations (unknown software,\n"
      "signatures that do not verify).");
  se->require_subcommand(1);
  auto* se_list = se->add_subcommand("list", "Show a tenant's newest security events");
  se_list->add_option("--tenant", o->tenant, "Tenant name")->required();
  se_list->add_option("--limit", o->limit, "How many (1..1000)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  se_list->callback([=, &exit_code] {
    Run(s, exit_code, "security-event list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("GET", TenantPath(o->tenant, fmt::format("/security-events?limit={}",
                                                                        o->limit))));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : j["security_events"]) {
        rows.push_back(
            {Str(e, "seq"), Str(e, "at"), Str(e, "device_id"), Str(e, "kind"), Str(e, "detail")});
      }
      PrintTable(s.out, {"#", "TIME", "DEVICE", "KIND", "DETAIL"}, rows);
      return Ok();
    });
  });
}

}  // namespace moat::cli
