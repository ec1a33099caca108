#include "device/agent/config.h"

#include "device/agent/instance.h"
#include "device/sandbox/sandbox_spec.h"
#include "device/update/update_agent.h"

#include <cerrno>
#include <cstdlib>

#include <fstream>

#include "core/file.h"
#include "core/json.h"
#include "formats/json_reader.h"

namespace moat::device::agent {
namespace {

std::filesystem::path Resolve(const std::filesystem::path& base, const std::string& p) {
  if (p.empty()) return {};
  std::filesystem::path path(p);
  return path.is_absolute() ? path : base / path;
}

// VERSION_ID from /etc/os-release, the OS version a plain Linux device reports.
std::string OsReleaseVersion() {
  std::ifstream in("/etc/os-release");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VERSION_ID=", 0) == 0) {
      std::string v = line.substr(11);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      if (!v.empty() && v.size() <= 64) return v;
    }
  }
  return "unknown";
}

Result<double> Fraction(const Json* j, std::string_view path, double fallback, double lo,
                        double hi) {
  if (j == nullptr) return fallback;
  if (!j->is_number()) return Fail(ErrorCode::kInvalidArgument, "{}: expected a number", path);
  double v = j->get<double>();
  if (!(v >= lo && v <= hi)) {
    return Fail(ErrorCode::kInvalidArgument, "{}: must be between {} and {}", path, lo, hi);
  }
  return v;
}

}  // namespace

Result<Config> ParseConfig(std::string_view text, const std::filesystem::path& base) {
  MOAT_ASSIGN_OR_RETURN(Json j,
                        ParseJson(text, "config", JsonLimits{.max_bytes = kMaxConfigBytes}));
  formats::ObjectReader r(j, "config");
  MOAT_TRY(r.status());
  Config c;
  MOAT_ASSIGN_OR_RETURN(c.service_url, r.RequiredString("service_url", 512));
  if (!c.service_url.starts_with("https://")) {
    return Fail(ErrorCode::kInvalidArgument, "config.service_url: must start with https://");
  }
  MOAT_ASSIGN_OR_RETURN(std::string root, r.RequiredString("service_root_certificate", 4096));
  c.service_root_certificate = Resolve(base, root);
  MOAT_ASSIGN_OR_RETURN(std::string state, r.RequiredString("state_dir", 4096));
  c.state_dir = Resolve(base, state);
  MOAT_ASSIGN_OR_RETURN(std::string socket, r.OptionalString("control_socket", 107));
  c.control_socket = socket.empty() ? c.state_dir / "moatctl.sock" : Resolve(base, socket);
  if (c.control_socket.string().size() > 107) {
    return Fail(ErrorCode::kInvalidArgument,
                "config.control_socket: '{}' is longer than a Unix socket path may be (107)",
                c.control_socket.string());
  }
  c.key_store_path = c.state_dir / "keys";
  if (const Json* ks = r.Member("key_store")) {
    formats::ObjectReader k(*ks, "config.key_store");
    MOAT_TRY(k.status());
    MOAT_ASSIGN_OR_RETURN(std::string backend, k.OptionalString("backend", 16));
    if (!backend.empty()) c.key_store_backend = backend;
    if (c.key_store_backend != "software" && c.key_store_backend != "tpm2" &&
        c.key_store_backend != "pkcs11") {
      return Fail(ErrorCode::kInvalidArgument,
                  "config.key_store.backend: '{}' is not one of software, tpm2, pkcs11",
                  c.key_store_backend);
    }
    MOAT_ASSIGN_OR_RETURN(std::string path, k.OptionalString("path", 4096));
    if (!path.empty()) c.key_store_path = Resolve(base, path);
    // Handles and NV indices: "0x81000001" strings (as tpm2-tools prints them) or numbers.
    auto handle = [&](std::string_view key, uint32_t& out) -> Result<void> {
      if (!ks->contains(key)) return Ok();
      k.MarkSeen(key);
      const Json& v = (*ks)[std::string(key)];
      uint64_t n = 0;
      if (v.is_number_unsigned()) {
        n = v.get<uint64_t>();
      } else if (v.is_string()) {
        const std::string t = v.get<std::string>();
        char* end = nullptr;
        errno = 0;
        n = std::strtoull(t.c_str(), &end, 0);
        if (t.empty() || t.size() > 18 || *end != '\0' || errno != 0) n = uint64_t{1} << 40;
      } else {
        n = uint64_t{1} << 40;
      }
      if (n > 0xffffffffu) {
        return Fail(ErrorCode::kInvalidArgument,
                    "config.key_store.{}: not a TPM handle (\"0x81000001\" or a number)", key);
      }
      out = static_cast<uint32_t>(n);
      return Ok();
    };
    if (c.key_store_backend == "tpm2") {
      MOAT_ASSIGN_OR_RETURN(std::string tcti, k.OptionalString("tcti", 1024));
      if (!tcti.empty()) c.key_store_tpm2.tcti = tcti;
      MOAT_TRY(handle("srk_handle", c.key_store_tpm2.srk_handle));
      MOAT_TRY(handle("ek_handle", c.key_store_tpm2.ek_handle));
      MOAT_TRY(handle("ek_certificate_nv_index", c.key_store_tpm2.ek_certificate_nv_index));
      MOAT_ASSIGN_OR_RETURN(auto pcr, k.OptionalInt("moat_pcr", 0, 23));
      if (pcr) c.key_store_tpm2.moat_pcr = static_cast<uint32_t>(*pcr);
    } else if (c.key_store_backend == "pkcs11") {
      MOAT_ASSIGN_OR_RETURN(c.key_store_pkcs11.module, k.RequiredString("module", 4096));
      c.key_store_pkcs11.module = Resolve(base, c.key_store_pkcs11.module).string();
      MOAT_ASSIGN_OR_RETURN(c.key_store_pkcs11.token_label, k.RequiredString("token", 32));
      MOAT_ASSIGN_OR_RETURN(std::string pin_file, k.OptionalString("pin_file", 4096));
      if (!pin_file.empty()) c.key_store_pkcs11.pin_file = Resolve(base, pin_file);
      MOAT_ASSIGN_OR_RETURN(c.key_store_pkcs11.pin_env, k.OptionalString("pin_env", 256));
      if (pin_file.empty() == c.key_store_pkcs11.pin_env.empty()) {
        return Fail(ErrorCode::kInvalidArgument,
                    "config.key_store: the pkcs11 backend needs exactly one of pin_file, pin_env");
      }
    }
    MOAT_TRY(k.NoOtherFields());
  }
  if (const Json* os = r.Member("os")) {
    formats::ObjectReader o(*os, "config.os");
    MOAT_TRY(o.status());
    MOAT_ASSIGN_OR_RETURN(std::string name, o.OptionalString("name", 128));
    if (!name.empty()) c.os_name = name;
    MOAT_ASSIGN_OR_RETURN(c.os_version, o.OptionalString("version", 64));
    MOAT_ASSIGN_OR_RETURN(std::string image, o.OptionalString("image", 4096));
    c.os_image = Resolve(base, image);
    MOAT_TRY(o.NoOtherFields());
  }
  if (c.os_version.empty()) c.os_version = OsReleaseVersion();
  if (const Json* a = r.Member("attestation")) {
    formats::ObjectReader o(*a, "config.attestation");
    MOAT_TRY(o.status());
    MOAT_ASSIGN_OR_RETURN(
        c.attestation.renew_at,
        Fraction(o.Member("renew_at"), "config.attestation.renew_at", 0.8, 0.1, 0.95));
    MOAT_ASSIGN_OR_RETURN(
        c.attestation.jitter,
        Fraction(o.Member("jitter"), "config.attestation.jitter", 0.1, 0.0, 0.25));
    MOAT_ASSIGN_OR_RETURN(auto initial, o.OptionalInt("retry_initial_seconds", 1, 3600));
    MOAT_ASSIGN_OR_RETURN(auto max, o.OptionalInt("retry_max_seconds", 1, 86400));
    if (initial) c.attestation.retry_initial = std::chrono::seconds(*initial);
    if (max) c.attestation.retry_max = std::chrono::seconds(*max);
    if (c.attestation.retry_max < c.attestation.retry_initial) {
      return Fail(ErrorCode::kInvalidArgument,
                  "config.attestation: retry_max_seconds is less than retry_initial_seconds");
    }
    MOAT_TRY(o.NoOtherFields());
  }
  if (const Json* u = r.Member("update")) {
    formats::ObjectReader o(*u, "config.update");
    MOAT_TRY(o.status());
    MOAT_ASSIGN_OR_RETURN(c.update.enabled, o.OptionalBool("enabled", true));
    MOAT_ASSIGN_OR_RETURN(auto hours, o.OptionalInt("interval_hours", 1, 24 * 30));
    if (hours) c.update.interval = std::chrono::hours(*hours);
    MOAT_ASSIGN_OR_RETURN(c.update.jitter,
                          Fraction(o.Member("jitter"), "config.update.jitter", 0.1, 0.0, 0.5));
    MOAT_ASSIGN_OR_RETURN(c.update.window, o.OptionalString("window", 32));
    if (!c.update.window.empty()) {
      auto w = update::ParseUpdateWindow(c.update.window);
      if (!w) return Fail(w.error().WithContext("config.update.window"));
    }
    MOAT_ASSIGN_OR_RETURN(auto deferral, o.OptionalInt("max_deferral_hours", 0, 24 * 7));
    if (deferral) c.update.max_deferral = std::chrono::hours(*deferral);
    MOAT_ASSIGN_OR_RETURN(auto rollback, o.OptionalInt("rollback_window_minutes", 1, 24 * 60 * 7));
    if (rollback) c.update.rollback_window = std::chrono::minutes(*rollback);
    MOAT_ASSIGN_OR_RETURN(auto initial, o.OptionalInt("retry_initial_seconds", 1, 3600));
    MOAT_ASSIGN_OR_RETURN(auto max, o.OptionalInt("retry_max_seconds", 1, 86400));
    if (initial) c.update.retry_initial = std::chrono::seconds(*initial);
    if (max) c.update.retry_max = std::chrono::seconds(*max);
    if (c.update.retry_max < c.update.retry_initial) {
      return Fail(ErrorCode::kInvalidArgument,
                  "config.update: retry_max_seconds is less than retry_initial_seconds");
    }
    MOAT_TRY(o.NoOtherFields());
  }
  if (const Json* s = r.Member("supervisor")) {
    formats::ObjectReader o(*s, "config.supervisor");
    MOAT_TRY(o.status());
    MOAT_ASSIGN_OR_RETURN(std::string board, o.OptionalString("board", 4096));
    if (!board.empty()) c.supervisor.board = Resolve(base, board);
    MOAT_ASSIGN_OR_RETURN(std::string instance, o.OptionalString("instance_id", 32));
    if (!instance.empty()) {
      if (!sandbox::IsValidSandboxName(instance)) {
        return Fail(ErrorCode::kInvalidArgument,
                    "config.supervisor.instance_id: '{}' is not a name ([A-Za-z0-9_.-]{{1,32}})",
                    instance);
      }
      c.supervisor.instance_id = instance;
    }
    MOAT_ASSIGN_OR_RETURN(std::string run_dir, o.OptionalString("run_dir", 1024));
    if (!run_dir.empty()) c.supervisor.run_dir = Resolve(base, run_dir);
    MOAT_ASSIGN_OR_RETURN(c.supervisor.network_pool, o.OptionalString("network_pool", 32));
    if (!c.supervisor.network_pool.empty()) {
      auto pool = sandbox::Ipv4Subnet::Parse(c.supervisor.network_pool);
      if (!pool) {
        return Fail(pool.error().WithContext("config.supervisor.network_pool"));
      }
      if (pool->prefix_len > 30) {
        return Fail(ErrorCode::kInvalidArgument,
                    "config.supervisor.network_pool: '{}' holds no /30 link",
                    c.supervisor.network_pool);
      }
    }
    MOAT_ASSIGN_OR_RETURN(auto crashes, o.OptionalInt("crash_loop_crashes", 1, 1000));
    if (crashes) c.supervisor.crash_loop_crashes = static_cast<uint32_t>(*crashes);
    MOAT_ASSIGN_OR_RETURN(auto window, o.OptionalInt("crash_loop_window_seconds", 1, 86400));
    if (window) c.supervisor.crash_loop_window = std::chrono::seconds(*window);
    MOAT_TRY(o.NoOtherFields());
  }
  MOAT_TRY(r.NoOtherFields());
  if (c.supervisor.instance_id.empty()) c.supervisor.instance_id = DefaultInstanceId(c.state_dir);
  return c;
}

Result<Config> LoadConfig(const std::filesystem::path& path) {
  MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxConfigBytes));
  auto c = ParseConfig(text, std::filesystem::absolute(path).parent_path());
  if (!c) return Fail(c.error().WithContext(path.string()));
  return c;
}

}  // namespace moat::device::agent
