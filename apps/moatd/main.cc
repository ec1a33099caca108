// moatd: the Moat device runtime. `moatd --config FILE` runs it; `moatd --config FILE identity`
// prints the device's ID and identity public key (what the manufacturer registers).
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>

#include <iostream>

#include "core/clock.h"
#include "core/file.h"
#include "core/log.h"
#include "crypto/random.h"
#include "device/agent/agent.h"
#include "rot/key_store.h"

namespace {

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;
using moat::device::agent::Config;

int Run(const Config& config) {
  // Block the stop signals before any thread starts; only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0) {
    std::cerr << "moatd: cannot block signals\n";
    return kExitFailure;
  }
  moat::SystemClock clock;
  moat::crypto::OpenSslRandom random;
  auto agent = moat::device::agent::Agent::Start(config, clock, random);
  if (!agent) {
    moat::log::Error("cannot start: {}", agent.error().message());
    return kExitFailure;
  }
  moat::log::Info("running; control socket {}", config.control_socket.string());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  moat::log::Info("received {}; stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*agent)->Stop();
  moat::log::Info("stopped");
  return kExitOk;
}

int Identity(const Config& config, const std::string& public_key_out) {
  auto keys = moat::device::agent::OpenKeyStore(config);
  if (!keys) {
    std::cerr << "moatd identity: " << keys.error().message() << "\n";
    return kExitFailure;
  }
  auto pub = (*keys)->GetPublicKey(moat::rot::kIdentityKeyLabel);
  if (!pub) {
    std::cerr << "moatd identity: " << pub.error().message() << "\n";
    return kExitFailure;
  }
  if (!public_key_out.empty()) {
    auto w = moat::AtomicWriteFile(public_key_out, pub->ToPem(), {.mode = 0644});
    if (!w) {
      std::cerr << "moatd identity: " << w.error().message() << "\n";
      return kExitFailure;
    }
  }
  // The ID the service knows the device by (on a TPM, its endorsement key's), as moatd run and
  // moatctl status report it.
  auto device_id = moat::device::agent::DeviceId(**keys);
  if (!device_id) {
    std::cerr << "moatd identity: " << device_id.error().message() << "\n";
    return kExitFailure;
  }
  std::cout << *device_id << "\n";
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "moatd — the Moat device runtime: keeps the device's identity in its root of trust,\n"
      "attests at start and daily to get 24 h certificates, and answers moatctl on a\n"
      "root-only socket. Offline, it keeps running and retries with backoff.\n\n"
      "First contact: `moatd --config F identity --public-key-out key.pem` gives the key\n"
      "the manufacturer registers (moat device register --public-key key.pem).",
      "moatd"};
  std::string config_path;
  app.add_option("--config", config_path, "moatd config file (JSON; see docs/moatd.md)")
      ->required()
      ->check(CLI::ExistingFile);
  std::string log_level = "info", log_format = "text";
  app.add_option("--log-level", log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  std::string public_key_out;
  auto* identity = app.add_subcommand(
      "identity",
      "Create the identity key if needed; print the device ID (lowercase hex SHA-256 of the\n"
      "identity public key's DER; with the tpm2 key store, of the TPM's endorsement key's\n"
      "public area) and optionally write the identity public key for registration.");
  identity->add_option("--public-key-out", public_key_out, "Write the identity public key (PEM)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  moat::log::Level level = moat::log::Level::kInfo;
  moat::log::ParseLevel(log_level, level);
  moat::log::Format format = moat::log::Format::kText;
  moat::log::ParseFormat(log_format, format);
  moat::log::Init("moatd", level, format);
  auto config = moat::device::agent::LoadConfig(config_path);
  if (!config) {
    std::cerr << "moatd: " << config.error().message() << "\n";
    return kExitFailure;
  }
  if (identity->parsed()) return Identity(*config, public_key_out);
  return Run(*config);
}
