// moatctl: local control of moatd over its root-only Unix socket.
#include <CLI/CLI.hpp>

#include <iostream>

#include "core/json.h"
#include "device/agent/config.h"
#include "device/agent/control.h"

namespace {

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;

std::string Str(const moat::Json& j, std::string_view key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

void PrintCertificate(const moat::Json& status, const char* key, const char* label) {
  const moat::Json& c = status[key];
  if (c.is_null()) {
    std::cout << fmt::format("{:<22} none\n", label);
    return;
  }
  std::cout << fmt::format("{:<22} valid until {}{} (serial {})\n", label, Str(c, "not_after"),
                           c.value("valid_now", false) ? "" : " [NOT VALID NOW]", Str(c, "serial"));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moatctl — control the local moatd (over its root-only Unix socket)", "moatctl"};
  std::string socket = "/var/lib/moat/moatctl.sock", config_path;
  bool json = false;
  app.add_option("--socket", socket, "moatd's control socket")->capture_default_str();
  app.add_option("--config", config_path, "Read the socket path from this moatd config");
  app.add_flag("--json", json, "Print moatd's answer as JSON");
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "Identity, certificates, last attestation");
  auto* identity = app.add_subcommand("identity", "The device ID and identity public key");
  auto* cert = app.add_subcommand("cert", "The device's certificates");
  cert->require_subcommand(1);
  auto* cert_show = cert->add_subcommand("show", "Show the client and update certificates");
  auto* attest = app.add_subcommand("attest", "Attestation");
  attest->require_subcommand(1);
  auto* attest_now = attest->add_subcommand("now", "Attest now instead of at the scheduled time");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (!config_path.empty()) {
    auto config = moat::device::agent::LoadConfig(config_path);
    if (!config) {
      std::cerr << "moatctl: " << config.error().message() << "\n";
      return kExitFailure;
    }
    socket = config->control_socket.string();
  }
  std::string command = status->parsed() || cert_show->parsed() ? "status"
                        : identity->parsed()                    ? "identity"
                        : attest_now->parsed()                  ? "attest"
                                                                : "status";
  auto answer = moat::device::agent::ControlCall(socket, {{"command", command}});
  if (!answer) {
    std::cerr << "moatctl: " << answer.error().message() << "\n";
    return kExitFailure;
  }
  const moat::Json& j = *answer;
  if (json) {
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  if (identity->parsed()) {
    std::cout << fmt::format("device ID:  {}\nkey store:  {}\n{}", Str(j, "device_id"),
                             Str(j, "key_store"), Str(j, "public_key"));
  } else if (attest_now->parsed()) {
    std::cout << Str(j, "message") << "\n";
  } else if (cert_show->parsed()) {
    PrintCertificate(j, "client_certificate", "client certificate:");
    PrintCertificate(j, "update_certificate", "update certificate:");
  } else {
    std::cout << fmt::format("{:<22} {}\n", "device ID:", Str(j, "device_id"));
    std::cout << fmt::format("{:<22} {}\n", "service:", Str(j, "service_url"));
    std::cout << fmt::format("{:<22} {}\n", "OS version:", Str(j, "os_version"));
    std::cout << fmt::format("{:<22} {}\n", "credential in use:", Str(j, "credential"));
    PrintCertificate(j, "client_certificate", "client certificate:");
    PrintCertificate(j, "update_certificate", "update certificate:");
    const moat::Json& last = j["last_attestation"];
    if (last.is_null()) {
      std::cout << fmt::format("{:<22} none yet\n", "last attestation:");
    } else {
      std::cout << fmt::format("{:<22} {} at {}\n", "last attestation:", Str(last, "result"),
                               Str(last, "at"));
      for (const auto& f : last["failures"]) {
        std::cout << "  - " << f.get<std::string>() << "\n";
      }
    }
    if (!j["last_error"].is_null()) {
      std::cout << fmt::format("{:<22} {} (failures in a row: {})\n",
                               "last error:", Str(j, "last_error"), Str(j, "consecutive_failures"));
    }
    std::cout << fmt::format("{:<22} {}\n", "next attestation:", Str(j, "next_attestation"));
  }
  return kExitOk;
}
