// moatctl: local control of moatd over its root-only Unix socket.
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
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
  auto* update = app.add_subcommand("update", "Updates");
  update->require_subcommand(1);
  bool ignore_window = false;
  auto* update_now =
      update->add_subcommand("now", "Check for updates now and install them; prints what happened");
  update_now->add_flag("--ignore-window", ignore_window, "Install even outside the update window");
  std::string bundle_path;
  auto* update_apply = update->add_subcommand(
      "apply", "Install an offline update bundle (same checks as an online update)");
  update_apply->add_option("BUNDLE", bundle_path, "The bundle file")
      ->required()
      ->check(CLI::ExistingFile);
  update_apply->add_flag("--ignore-window", ignore_window,
                         "Install even outside the update window");
  std::string defer_component;
  int defer_minutes = 0;
  auto* update_defer = update->add_subcommand(
      "defer", "Defer an app's pending update (apps with SoftwareUpdateDeferral; bounded)");
  update_defer->add_option("COMPONENT", defer_component, "The app's component ID")->required();
  update_defer->add_option("MINUTES", defer_minutes, "How long")
      ->required()
      ->check(CLI::Range(1, 7 * 24 * 60));
  auto* apps = app.add_subcommand("app", "The installed apps");
  apps->require_subcommand(1);
  auto* app_list = apps->add_subcommand("list", "Every app: state, launches, failures");
  std::string app_id;
  bool show_spec = false, stderr_stream = false;
  int log_lines = 100;
  auto* app_show = apps->add_subcommand("show", "One app's status (and its sandbox spec)");
  app_show->add_option("ID", app_id, "Component ID or app name")->required();
  app_show->add_flag("--spec", show_spec, "Also print the sandbox spec");
  auto* app_start = apps->add_subcommand("start", "Start an app stopped with 'app stop'");
  app_start->add_option("ID", app_id, "Component ID or app name")->required();
  auto* app_stop =
      apps->add_subcommand("stop", "Stop an app and keep it stopped (until 'app start')");
  app_stop->add_option("ID", app_id, "Component ID or app name")->required();
  auto* app_logs = apps->add_subcommand("logs", "The end of an app's stdout (or stderr) log");
  app_logs->add_option("ID", app_id, "Component ID or app name")->required();
  app_logs->add_flag("--stderr", stderr_stream, "The stderr log instead of stdout");
  app_logs->add_option("--lines", log_lines, "How many lines")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
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
  moat::Json request = {{"command", command}};
  auto timeout = std::chrono::milliseconds(2000);
  if (update_now->parsed() || update_apply->parsed()) {
    request = {{"command", update_now->parsed() ? "update-now" : "update-apply"},
               {"ignore_window", ignore_window}};
    if (update_apply->parsed()) {
      request["path"] = std::filesystem::absolute(bundle_path).string();
    }
    timeout = std::chrono::minutes(30);  // downloads and installs
  } else if (update_defer->parsed()) {
    request = {
        {"command", "update-defer"}, {"component_id", defer_component}, {"minutes", defer_minutes}};
  }
  if (app_list->parsed()) {
    request = {{"command", "app-list"}};
  } else if (app_show->parsed()) {
    request = {{"command", "app-show"}, {"app", app_id}, {"spec", show_spec}};
  } else if (app_start->parsed() || app_stop->parsed()) {
    request = {{"command", app_start->parsed() ? "app-start" : "app-stop"}, {"app", app_id}};
    timeout = std::chrono::seconds(60);  // the stop grace period, then SIGKILL
  } else if (app_logs->parsed()) {
    request = {{"command", "app-logs"},
               {"app", app_id},
               {"stream", stderr_stream ? "stderr" : "stdout"},
               {"lines", log_lines}};
  }
  auto answer = moat::device::agent::ControlCall(socket, request, timeout);
  if (!answer) {
    std::cerr << "moatctl: " << answer.error().message() << "\n";
    return kExitFailure;
  }
  const moat::Json& j = *answer;
  if (json) {
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  if (update_now->parsed() || update_apply->parsed()) {
    std::cout << fmt::format("{:<18} {}\n", "result:", Str(j, "result"));
    std::cout << fmt::format("{:<18} {}\n", "targets version:", Str(j, "targets_version"));
    std::cout << fmt::format("{:<18} {}\n", "detail:", Str(j, "detail"));
    std::cout << fmt::format("{:<18} {}\n", "reported:", Str(j, "reported"));
    return j.value("result", "") == "failed" ? kExitFailure : kExitOk;
  }
  if (app_list->parsed()) {
    std::cout << fmt::format("{:<36}  {:<16} {:<10} {:<8} {:>8} {:>8}\n", "COMPONENT ID", "NAME",
                             "VERSION", "STATE", "LAUNCHES", "FAILURES");
    for (const auto& a : j["apps"]) {
      std::cout << fmt::format("{:<36}  {:<16} {:<10} {:<8} {:>8} {:>8}\n", Str(a, "component_id"),
                               Str(a, "name"), Str(a, "version"), Str(a, "state"),
                               Str(a, "launches"), Str(a, "failures"));
    }
    return kExitOk;
  }
  if (app_show->parsed()) {
    for (const char* key :
         {"component_id", "image_id", "name", "version", "state", "pid", "launches", "failures",
          "last_exit", "last_error", "next_start_in_ms"}) {
      std::cout << fmt::format("{:<18} {}\n", std::string(key) + ":", Str(j, key));
    }
    if (show_spec) std::cout << "sandbox spec:\n" << Str(j, "spec_text") << "\n";
    return kExitOk;
  }
  if (app_start->parsed()) {
    std::cout << "started " << app_id << "\n";
    return kExitOk;
  }
  if (app_stop->parsed()) {
    std::cout << (j.value("was_running", false)
                      ? fmt::format("stopped {} ({})\n", app_id, Str(j, "exit"))
                      : fmt::format("stopped {} (was not running)\n", app_id));
    return kExitOk;
  }
  if (app_logs->parsed()) {
    std::cout << Str(j, "text");
    return kExitOk;
  }
  if (update_defer->parsed()) {
    std::cout << "deferred until " << Str(j, "deferred_until") << "\n";
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
    const moat::Json& u = j["update"];
    if (u.is_object()) {
      std::cout << fmt::format("{:<22} {}\n", "device group:", Str(u, "group"));
      const moat::Json& last_update = u["last_update"];
      std::cout << fmt::format("{:<22} {} at {}: {}\n", "last update:", Str(last_update, "result"),
                               Str(last_update, "at"), Str(last_update, "detail"));
      std::cout << fmt::format("{:<22} {}\n", "next update check:", Str(j, "next_update_check"));
      for (const auto& a : u["installed"]) {
        std::cout << fmt::format("  installed {} {} ({})\n", Str(a, "component_id"),
                                 Str(a, "version"), Str(a, "image_id").substr(0, 12));
      }
    }
    for (const auto& a : j["apps"]) {
      std::cout << fmt::format("  app {} {}: {} (launches {}, failures {})\n",
                               Str(a, "component_id"), Str(a, "version"), Str(a, "state"),
                               Str(a, "launches"), Str(a, "failures"));
    }
    if (!j["apps_error"].is_null()) {
      std::cout << fmt::format("{:<22} {}\n", "apps cannot run:", Str(j, "apps_error"));
    }
  }
  return kExitOk;
}
