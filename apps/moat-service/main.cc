// moat-service: `init` creates a data directory, `run` serves it over mutual TLS.
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>

#include <iostream>

#include "core/clock.h"
#include "core/log.h"
#include "crypto/random.h"
#include "service/service.h"

namespace {

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;

int RunService(const moat::service::RunOptions& options, int grace_seconds) {
  // Block the stop signals before any thread starts, so every I/O thread inherits the mask
  // and only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0) {
    std::cerr << "moat-service: cannot block signals\n";
    return kExitFailure;
  }
  moat::SystemClock clock;
  moat::crypto::OpenSslRandom random;
  auto service = moat::service::Service::Start(options, clock, random);
  if (!service) {
    moat::log::Error("cannot start: {}", service.error().message());
    return kExitFailure;
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  moat::log::Info("received {}; finishing requests in flight (up to {} s)",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT", grace_seconds);
  (*service)->Shutdown(std::chrono::seconds(grace_seconds));
  moat::log::Info("stopped");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "moat-service — the Moat security service: tenants and their CAs, the device registry,\n"
      "attestation-gated device certificates. Everything is served over mutual TLS.\n\n"
      "First `moat-service init --data-dir DIR`, then `moat-service run --data-dir DIR`.",
      "moat-service"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  std::string log_format = "text";
  app.add_option("--log-format", log_format,
                 "text (for people) or json (one object per line, for log collectors)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();

  moat::service::InitOptions init;
  auto* init_cmd = app.add_subcommand(
      "init",
      "Create a new data directory: the service root CA, the operator CA, the server\n"
      "certificate, the database, and the first administrator's credentials (an operator\n"
      "config file, mode 0600, that the `moat` CLI reads). Refuses to touch an existing one.");
  init_cmd->add_option("--data-dir", init.data_dir, "Directory to create")->required();
  init_cmd->add_option("--name", init.service_name, "Service name, used in CA names")
      ->capture_default_str();
  init_cmd->add_option("--dns", init.server_dns, "DNS names of the server certificate (repeat)")
      ->capture_default_str();
  init_cmd->add_option("--ip", init.server_ips, "IP addresses of the server certificate (repeat)")
      ->capture_default_str();
  init_cmd->add_option("--listen", init.listen_address, "Address to listen on")
      ->capture_default_str();
  init_cmd->add_option("--port", init.port, "Port to listen on")->capture_default_str();
  init_cmd->add_option("--admin-name", init.admin_name, "Name of the first administrator")
      ->capture_default_str();
  init_cmd->add_option("--admin-config", init.admin_config,
                       "Where to write the administrator's operator config "
                       "(default DATA_DIR/admin.moat.json)");

  moat::service::RunOptions run;
  int grace_seconds = 10;
  auto* run_cmd = app.add_subcommand(
      "run", "Serve a data directory until SIGTERM or SIGINT, then finish requests in flight.");
  run_cmd->add_option("--data-dir", run.data_dir, "Data directory made by init")
      ->required()
      ->check(CLI::ExistingDirectory);
  run_cmd->add_option("--listen", run.listen_address, "Override the listen address");
  run_cmd->add_option("--port", run.port, "Override the port (0 keeps service.json's)");
  run_cmd->add_option("--threads", run.threads, "I/O threads (0 = one per core)")
      ->capture_default_str();
  run_cmd
      ->add_option("--shutdown-grace", grace_seconds,
                   "Seconds to let requests in flight finish on SIGTERM")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      app.exit(e);
      return kExitOk;
    }
    std::cerr << "moat-service: " << e.what() << "\nRun 'moat-service --help' for usage.\n";
    return kExitUsage;
  }
  moat::log::Level level = moat::log::Level::kInfo;
  moat::log::ParseLevel(log_level, level);
  moat::log::Format format = moat::log::Format::kText;
  moat::log::ParseFormat(log_format, format);
  moat::log::Init("moat-service", level, format);

  if (*init_cmd) {
    moat::SystemClock clock;
    moat::crypto::OpenSslRandom random;
    auto r = moat::service::InitDataDir(init, clock, random, std::cout);
    if (!r) {
      std::cerr << "moat-service init: " << r.error().message() << "\n";
      return kExitFailure;
    }
    return kExitOk;
  }
  return RunService(run, grace_seconds);
}
