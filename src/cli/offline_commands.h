// Offline `moat` commands: they need no service and no network.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/command.h"

namespace moat::cli {

// Each Register* adds its subcommand(s) to `app`; the command runs from CLI11's callback and
// reports its exit status through `exit_code`.
void RegisterKeygen(CLI::App& app, Streams streams, int& exit_code);
void RegisterImagePackage(CLI::App& app, Streams streams, int& exit_code);
void RegisterManifest(CLI::App& app, Streams streams, int& exit_code);

}  // namespace moat::cli
