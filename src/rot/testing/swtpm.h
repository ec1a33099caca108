// Test and benchmark helpers: a private swtpm and a private SoftHSM2 token.
//
// Swtpm runs `swtpm socket --tpm2` on two free loopback ports with its state in a directory;
// the state is made with `swtpm_setup --tpm2 --create-ek-cert --create-platform-cert`
// (offline: swtpm_localca signs the EK certificate with its local CA under
// /var/lib/swtpm-localca). swtpm serves one TCTI connection at a time.
//
// SoftHsm writes a softhsm2.conf with its own token directory, points SOFTHSM2_CONF at it
// (process-wide) and initialises a token with softhsm2-util.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "core/error.h"

namespace moat::rot::testing {

// The path of `name` on PATH or in /usr/sbin, /usr/bin; empty if absent.
std::string FindTool(const std::string& name);

class Swtpm {
 public:
  // True if swtpm and swtpm_setup are installed.
  static bool Available();

  // Manufactures a TPM in `state_dir` (swtpm_setup; EK certificates included) unless
  // `fresh` is false, in which case the state there is reused; then starts swtpm on it.
  static Result<Swtpm> Start(const std::filesystem::path& state_dir, bool fresh = true);
  ~Swtpm();
  Swtpm(Swtpm&& other) noexcept;
  Swtpm& operator=(Swtpm&&) = delete;

  // Stops swtpm (SIGTERM, waits). The state stays in state_dir.
  void Stop();
  // Stops and starts again on the same state and ports: a power cycle.
  Result<void> Restart();

  std::string tcti() const;
  const std::filesystem::path& state_dir() const { return state_dir_; }

 private:
  Swtpm(std::filesystem::path state_dir) : state_dir_(std::move(state_dir)) {}
  Result<void> Launch();
  std::filesystem::path state_dir_;
  int port_ = 0;
  int ctrl_port_ = 0;
  pid_t pid_ = -1;
};

struct SoftHsmToken {
  std::string module = "/usr/lib/softhsm/libsofthsm2.so";
  std::string label = "moat";
  std::filesystem::path pin_file;  // mode 0600, holds the user PIN
};

// True if softhsm2-util and the module are installed.
bool SoftHsmAvailable();
// Initialises a token labelled "moat" under `dir` and sets SOFTHSM2_CONF (process-wide).
Result<SoftHsmToken> InitSoftHsm(const std::filesystem::path& dir);

}  // namespace moat::rot::testing
