// Online `moat` commands: they talk to moat-service over mutual TLS as the operator named in
// the operator config (--config FILE, or $MOAT_CONFIG).
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "cli/offline_commands.h"
#include "core/json.h"

namespace moat::cli {

enum class OutputFormat { kTable, kJson };

struct GlobalOptions {
  std::string config;  // operator config path
  OutputFormat output = OutputFormat::kTable;
};

void RegisterOnline(CLI::App& app, Streams streams, int& exit_code,
                    std::shared_ptr<GlobalOptions> global);
// reference-value add|list|remove, security-event list (attestation_commands.cc).
void RegisterAttestation(CLI::App& app, Streams streams, int& exit_code,
                         std::shared_ptr<GlobalOptions> global);

// product, device-group, image-signing-key, image; device update (fleet_commands.cc). Call
// after RegisterOnline: it adds `update` to the `device` command.
void RegisterFleet(CLI::App& app, Streams streams, int& exit_code,
                   std::shared_ptr<GlobalOptions> global);

// A device's installed versus targeted images, from the service's deployment-status JSON (for
// `device show` and `device show-deployment-status`; fleet_commands.cc).
void PrintDeploymentStatus(std::ostream& out, const Json& status);

}  // namespace moat::cli
