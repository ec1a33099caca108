#include "cli/cli.h"

#include <CLI/CLI.hpp>

#include <ostream>

#include "cli/offline_commands.h"

namespace moat::cli {

int Main(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{
      "moat — open, self-hostable security for connected devices.\n\n"
      "Offline commands create signing keys, pack and verify signed image packages and check\n"
      "app manifests. Run `moat COMMAND --help` for the options of each command.",
      "moat"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "moat 0.1.0");
  app.footer("Exit status: 0 success, 1 failure, 2 usage error.");

  int exit_code = kExitOk;
  Streams streams{out, err};
  RegisterKeygen(app, streams, exit_code);
  RegisterImagePackage(app, streams, exit_code);
  RegisterManifest(app, streams, exit_code);

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
