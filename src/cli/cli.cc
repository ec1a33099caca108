#include "cli/cli.h"

#include <CLI/CLI.hpp>

#include <ostream>

#include "cli/offline_commands.h"
#include "cli/online_commands.h"

namespace moat::cli {

int Main(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{
      "moat — open, self-hostable security for connected devices.\n\n"
      "Offline commands create signing keys, pack and verify signed image packages and check\n"
      "app manifests. Online commands (whoami, tenant, ca-certificate, audit) talk to\n"
      "moat-service over mutual TLS as the operator in --config (or $MOAT_CONFIG).\n"
      "Run `moat COMMAND --help` for the options of each command.",
      "moat"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--config, --output) may follow the subcommand
  app.set_version_flag("--version", "moat 0.1.0");
  app.footer("Exit status: 0 success, 1 failure, 2 usage error.");

  int exit_code = kExitOk;
  Streams streams{out, err};
  RegisterKeygen(app, streams, exit_code);
  RegisterImagePackage(app, streams, exit_code);
  RegisterManifest(app, streams, exit_code);

  auto global = std::make_shared<GlobalOptions>();
  app.add_option("--config", global->config,
                 "Operator config for online commands (default: $MOAT_CONFIG)");
  auto output = std::make_shared<std::string>("table");
  app.add_option("--output,-o", *output, "table (for people) or json (for scripts)")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str()
      ->each([global](const std::string& v) {
        global->output = v == "json" ? OutputFormat::kJson : OutputFormat::kTable;
      });
  RegisterOnline(app, streams, exit_code, global);
  RegisterAttestation(app, streams, exit_code, global);
  RegisterFleet(app, streams, exit_code, global);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::CallForVersion&) {
    out << "moat 0.1.0\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    // Help requested for a subcommand comes through here as a "success" parse error.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      app.exit(e, out, err);
      return kExitOk;
    }
    err << "moat: " << e.what() << "\n";
    err << "Run 'moat --help' (or 'moat COMMAND --help') for usage.\n";
    return kExitUsage;
  }
  return exit_code;
}

}  // namespace moat::cli
