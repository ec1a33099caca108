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
//                     "retry_max_seconds": 3600},
//     "update": {"interval_hours": 20, "jitter": 0.1, "window": "02:00-04:00",
//                "max_deferral_hours": 24, "rollback_window_minutes": 60},
//     "supervisor": {"board": "/etc/moat/board.json", "crash_loop_crashes": 5,
//                    "crash_loop_window_seconds": 600}
//   }
//
// Only service_url, service_root_certificate and state_dir are required; docs/moatd.md lists
// the defaults. Relative paths are relative to the config file's directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "rot/open_key_store.h"

namespace moat::device::agent {

inline constexpr size_t kMaxConfigBytes = 64 * 1024;

struct AttestationSchedule {
  double renew_at = 0.8;  // of the certificate's lifetime
  double jitter = 0.1;    // +- this fraction of the lifetime, spread so a fleet does not stampede
  std::chrono::seconds retry_initial{5};
  std::chrono::seconds retry_max{3600};
};

// The update agent (docs/moatd.md, "Updates").
struct UpdateSettings {
  bool enabled = true;
  std::chrono::seconds interval{20 * 3600};  // between checks
  double jitter = 0.1;                       // +- this fraction of the interval
  std::string window;                        // "HH:MM-HH:MM" UTC; empty: any time
  std::chrono::seconds max_deferral{24 * 3600};
  std::chrono::seconds rollback_window{3600};  // a crash loop this soon after an update rolls back
  std::chrono::seconds retry_initial{60};
  std::chrono::seconds retry_max{3600};
};

// Running apps (docs/moatd.md, "Apps").
struct SupervisorSettings {
  std::filesystem::path board;  // the board's hardware definition (JSON); empty: none
  // Names the cgroups and network of this moatd's apps ([A-Za-z0-9_.-]{1,32}); default:
  // DefaultInstanceId(state_dir) (instance.h), so each state directory is its own instance.
  std::string instance_id;
  // The host-wide instance registry (instance.h); "/run/moat".
  std::filesystem::path run_dir = "/run/moat";
  // The app links' pool ("10.213.0.0/22"); empty: from the instance's slot (instance.h).
  std::string network_pool;
  uint32_t crash_loop_crashes = 5;              // N crashes ...
  std::chrono::seconds crash_loop_window{600};  // ... within T make a crash loop
};

struct Config {
  std::string service_url;
  std::filesystem::path service_root_certificate;
  std::filesystem::path state_dir;
  std::string key_store_backend = "software";
  std::filesystem::path key_store_path;  // default: <state_dir>/keys
  rot::Tpm2Options key_store_tpm2;       // backend tpm2: tcti, handles, moat_pcr (docs/rot.md)
  rot::Pkcs11Options key_store_pkcs11;   // backend pkcs11: module, token, pin_file | pin_env
  std::string os_name = "linux";
  std::string os_version;                // default: VERSION_ID of /etc/os-release, else "unknown"
  std::filesystem::path os_image;        // measured at start; default: none (see docs)
  std::filesystem::path control_socket;  // default: <state_dir>/moatctl.sock
  AttestationSchedule attestation;
  UpdateSettings update;
  SupervisorSettings supervisor;
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
  // Installed apps (device/update/app_store.h) and their update state.
  std::filesystem::path apps() const { return root / "apps"; }
  // Each app's uid/gid, kept across updates.
  std::filesystem::path app_ids() const { return root / "app-ids.json"; }
  std::filesystem::path app_logs() const { return root / "logs"; }
  std::filesystem::path app_storage() const { return root / "storage"; }
};

}  // namespace moat::device::agent
