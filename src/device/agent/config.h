// moatd's configuration file (JSON), and the state directory it describes.
//
//   {
//     "service_url": "https://moat.example.com:8443",
//     "service_root_certificate": "/etc/moat/service-root.pem",
//     "state_dir": "/var/lib/moat",
//     "key_store": {"backend": "software", "path": "/var/lib/moat/keys"},
//     "os": {"name": "moat-linux", "version": "1.4", "image": "/boot/os.img"},
//     "control_socket": "/run/moat/moatctl.sock",
//     "attestation": {"renew_at": 0.8, "jitter": 0.1, "retry_initial_seconds": 5,
//                     "retry_max_seconds": 3600}
//   }
//
// Only service_url, service_root_certificate and state_dir are required; docs/moatd.md lists
// the defaults. Relative paths are relative to the config file's directory.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include "core/error.h"

namespace moat::device::agent {

inline constexpr size_t kMaxConfigBytes = 64 * 1024;

struct AttestationSchedule {
  double renew_at = 0.8;  // of the certificate's lifetime
  double jitter = 0.1;    // +- this fraction of the lifetime, spread so a fleet does not stampede
  std::chrono::seconds retry_initial{5};
  std::chrono::seconds retry_max{3600};
};

struct Config {
  std::string service_url;
  std::filesystem::path service_root_certificate;
  std::filesystem::path state_dir;
  std::string key_store_backend = "software";
  std::filesystem::path key_store_path;  // default: <state_dir>/keys
  std::string os_name = "linux";
  std::string os_version;                // default: VERSION_ID of /etc/os-release, else "unknown"
  std::filesystem::path os_image;        // measured at start; default: none (see docs)
  std::filesystem::path control_socket;  // default: <state_dir>/moatctl.sock
  AttestationSchedule attestation;
};

Result<Config> ParseConfig(std::string_view json, const std::filesystem::path& base_dir);
Result<Config> LoadConfig(const std::filesystem::path& path);

// Paths inside the state directory (mode 0700, root's).
struct StateLayout {
  explicit StateLayout(std::filesystem::path dir) : root(std::move(dir)) {}
  std::filesystem::path root;
  std::filesystem::path certificates() const { return root / "certificates"; }
  // Leaf + issuing CA, PEM; written atomically on every attestation.
  std::filesystem::path client_certificate() const { return certificates() / "client.pem"; }
  std::filesystem::path update_certificate() const { return certificates() / "update.pem"; }
  // The last attestation's outcome, for moatctl status after a restart.
  std::filesystem::path attestation_record() const { return root / "attestation.json"; }
};

}  // namespace moat::device::agent
