#include "device/sandbox/sandbox_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace moat::device::sandbox {
namespace {

Result<void> Invalid(std::string_view app, std::string_view field, std::string_view why) {
  return Fail(ErrorCode::kInvalidArgument, "sandbox spec for '{}': {}: {}", app, field, why);
}

bool HasControlChars(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// An absolute path with no empty, "." or ".." components and no trailing slash (except "/").
bool IsNormalAbsolute(const std::filesystem::path& p) {
  const std::string& s = p.native();
  if (s.empty() || s[0] != '/' || HasControlChars(s)) return false;
  if (s == "/") return true;
  if (s.back() == '/') return false;
  size_t start = 1;
  while (start <= s.size()) {
    size_t end = s.find('/', start);
    if (end == std::string::npos) end = s.size();
    std::string_view part(s.data() + start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// True if `inner` equals `outer` or lies beneath it (both normal absolute paths).
bool IsWithin(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  const std::string& i = inner.native();
  const std::string& o = outer.native();
  if (o == "/") return true;
  return i == o || (i.size() > o.size() && i.compare(0, o.size(), o) == 0 && i[o.size()] == '/');
}

bool IsValidEnvEntry(std::string_view e) {
  size_t eq = e.find('=');
  if (eq == std::string_view::npos || eq == 0) return false;
  for (size_t i = 0; i < eq; ++i) {
    char c = e[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return e.find('\0') == std::string_view::npos;
}

bool IsValidHostname(std::string_view h) {
  if (h.empty() || h.size() > 64 || h.front() == '-' || h.front() == '.') return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
  });
}

std::string Quoted(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += fmt::format("\"{}\"", items[i]);
  }
  return out + "]";
}

std::string PathList(const std::vector<std::filesystem::path>& paths) {
  if (paths.empty()) return "none";
  std::string out;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (i) out += ", ";
    out += paths[i].string();
  }
  return out;
}

std::string Bytes(uint64_t n) {
  if (n % (1ull << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n % 1024 == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} bytes", n);
}

}  // namespace

std::string_view SeccompClassName(SeccompClass c) {
  switch (c) {
    case SeccompClass::kDefault:
      return "default";
    case SeccompClass::kRealTime:
      return "real-time";
  }
  return "?";
}

std::string_view NetworkModeName(NetworkMode m) {
  switch (m) {
    case NetworkMode::kNone:
      return "none";
    case NetworkMode::kConfigured:
      return "configured";
  }
  return "?";
}

std::string SandboxSpec::EffectiveHostname() const {
  if (!hostname.empty()) return hostname;
  std::string h = app_name;
  std::replace(h.begin(), h.end(), '_', '-');
  return h;
}

bool IsValidSandboxName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

Result<void> SandboxSpec::Validate() const {
  const std::string app = IsValidSandboxName(app_name) ? app_name : "?";
  if (!IsValidSandboxName(app_name)) {
    return Invalid(app, "app_name",
                   fmt::format("'{}' is not a name ([A-Za-z0-9_.-]{{1,64}})", app_name));
  }
  if (!IsValidSandboxName(instance_id)) {
    return Invalid(app, "instance_id",
                   fmt::format("'{}' is not a name ([A-Za-z0-9_.-]{{1,64}})", instance_id));
  }
  if (!IsNormalAbsolute(executable) || executable == "/") {
    return Invalid(
        app, "executable",
        fmt::format("'{}' is not an absolute, normalized file path", executable.string()));
  }
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].find('\0') != std::string::npos) {
      return Invalid(app, fmt::format("args[{}]", i), "contains a NUL byte");
    }
  }
  std::set<std::string> env_names;
  for (size_t i = 0; i < env.size(); ++i) {
    if (!IsValidEnvEntry(env[i])) {
      return Invalid(app, fmt::format("env[{}]", i), "is not NAME=value");
    }
    if (!env_names.insert(env[i].substr(0, env[i].find('='))).second) {
      return Invalid(app, fmt::format("env[{}]", i), "sets a variable twice");
    }
  }
  // SECURITY: an app never runs as root, nor as the "unset" id that set*id(-1) leaves unchanged.
  if (uid == 0 || uid == static_cast<uid_t>(-1)) {
    return Invalid(app, "uid", fmt::format("{} is not an app uid (0 and -1 are refused)", uid));
  }
  if (gid == 0 || gid == static_cast<gid_t>(-1)) {
    return Invalid(app, "gid", fmt::format("{} is not an app gid (0 and -1 are refused)", gid));
  }
  if (!IsNormalAbsolute(root_image) || root_image == "/") {
    return Invalid(app, "root_image",
                   fmt::format("'{}' is not an absolute, normalized directory other than /",
                               root_image.string()));
  }
  for (size_t i = 0; i < runtime_binds.size(); ++i) {
    const auto& b = runtime_binds[i];
    std::string field = fmt::format("runtime_binds[{}]", i);
    if (!IsNormalAbsolute(b) || b == "/") {
      return Invalid(
          app, field,
          fmt::format("'{}' is not an absolute, normalized path other than /", b.string()));
    }
    for (std::string_view reserved : {"/proc", "/dev", "/tmp", "/mnt"}) {
      if (IsWithin(b, std::filesystem::path(reserved))) {
        return Invalid(
            app, field,
            fmt::format("'{}' lies under {}, which the sandbox provides", b.string(), reserved));
      }
    }
    for (size_t j = 0; j < i; ++j) {
      if (IsWithin(b, runtime_binds[j]) || IsWithin(runtime_binds[j], b)) {
        return Invalid(app, field,
                       fmt::format("'{}' overlaps runtime_binds[{}] '{}'", b.string(), j,
                                   runtime_binds[j].string()));
      }
    }
  }
  if (tmp_size_bytes < 4096 || tmp_size_bytes > limits.memory_bytes) {
    return Invalid(app, "tmp_size_bytes",
                   fmt::format("{} is out of range 4096..memory limit ({})", tmp_size_bytes,
                               limits.memory_bytes));
  }
  if (storage) {
    if (!IsNormalAbsolute(storage->image) || storage->image == "/") {
      return Invalid(
          app, "storage.image",
          fmt::format("'{}' is not an absolute, normalized file path", storage->image.string()));
    }
    if (storage->size_kb < 64 || storage->size_kb > (16ull << 20)) {
      return Invalid(app, "storage.size_kb",
                     fmt::format("{} is out of range 64..16777216", storage->size_kb));
    }
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    const auto& d = devices[i];
    std::string field = fmt::format("devices[{}]", i);
    if (!IsNormalAbsolute(d) || !IsWithin(d, "/dev") || d == "/dev") {
      return Invalid(app, field,
                     fmt::format("'{}' is not a normalized path under /dev/", d.string()));
    }
    for (std::string_view builtin : {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/fd",
                                     "/dev/stdin", "/dev/stdout", "/dev/stderr"}) {
      if (d == builtin) {
        return Invalid(app, field, fmt::format("'{}' is always present", d.string()));
      }
    }
    for (size_t j = 0; j < i; ++j) {
      if (IsWithin(d, devices[j]) || IsWithin(devices[j], d)) {
        return Invalid(app, field, fmt::format("'{}' overlaps devices[{}]", d.string(), j));
      }
    }
  }
  if (limits.memory_bytes < (4ull << 20)) {
    return Invalid(app, "limits.memory_bytes",
                   fmt::format("{} is below the minimum of 4 MiB", limits.memory_bytes));
  }
  if (limits.pids_max < 2 || limits.pids_max > 65536) {
    return Invalid(
        app, "limits.pids_max",
        fmt::format("{} is out of range 2..65536 (the init counts too)", limits.pids_max));
  }
  if (limits.cpu && *limits.cpu >= 4096) {
    return Invalid(app, "limits.cpu", fmt::format("{} is out of range 0..4095", *limits.cpu));
  }
  if (!IsValidHostname(EffectiveHostname())) {
    return Invalid(
        app, "hostname",
        fmt::format("'{}' is not a hostname ([A-Za-z0-9.-]{{1,64}})", EffectiveHostname()));
  }
  if (max_open_files < 16 || max_open_files > (1u << 20)) {
    return Invalid(app, "max_open_files",
                   fmt::format("{} is out of range 16..1048576", max_open_files));
  }
  for (const auto* p : {&stdout_path, &stderr_path}) {
    if (!p->empty() && !IsNormalAbsolute(*p)) {
      return Invalid(app, p == &stdout_path ? "stdout_path" : "stderr_path",
                     fmt::format("'{}' is not an absolute, normalized path", p->string()));
    }
  }
  return Ok();
}

std::string SandboxSpec::Describe() const {
  std::string out;
  auto line = [&out](std::string_view key, std::string_view value) {
    out += fmt::format("  {:<16} {}\n", fmt::format("{}:", key), value);
  };
  out += fmt::format("sandbox '{}' (moatd instance '{}')\n", app_name, instance_id);
  line("executable", executable.string());
  line("args", Quoted(args));
  line("env", Quoted(env));
  line("uid/gid", fmt::format("{}/{} (no supplementary groups, no capabilities)", uid, gid));
  line("root", fmt::format("{} (read-only, nosuid, nodev)", root_image.string()));
  line("runtime binds", runtime_binds.empty()
                            ? std::string("none")
                            : PathList(runtime_binds) + " (read-only, nosuid, nodev)");
  line("/proc", "own PID namespace only; /proc/sys read-only");
  line("/tmp", fmt::format("private tmpfs, {} (nosuid, nodev, noexec)", Bytes(tmp_size_bytes)));
  line("storage", storage
                      ? fmt::format("{} at {}, {} KiB (read-write, nosuid, nodev, noexec)",
                                    storage->image.string(), kStorageMountPoint, storage->size_kb)
                      : std::string("none"));
  line("devices", "/dev/null, /dev/zero, /dev/urandom" +
                      (devices.empty() ? std::string() : ", " + PathList(devices)));
  line("memory", Bytes(limits.memory_bytes));
  line("pids", fmt::format("{}", limits.pids_max));
  line("cpu", limits.cpu ? fmt::format("pinned to {}", *limits.cpu) : std::string("any"));
  line("seccomp", std::string(SeccompClassName(seccomp_class)));
  line("network", network == NetworkMode::kNone
                      ? std::string("none (own namespace, lo only)")
                      : std::string("configured by the network hook (own namespace)"));
  line("hostname", EffectiveHostname());
  line("open files", fmt::format("{}", max_open_files));
  line("stdout",
       stdout_path.empty() ? std::string("/dev/null or launcher fd") : stdout_path.string());
  line("stderr",
       stderr_path.empty() ? std::string("/dev/null or launcher fd") : stderr_path.string());
  return out;
}

Json SpecToJson(const SandboxSpec& spec) {
  auto paths = [](const std::vector<std::filesystem::path>& list) {
    Json out = Json::array();
    for (const auto& p : list) out.push_back(p.string());
    return out;
  };
  auto strings = [](const std::vector<std::string>& list) {
    Json out = Json::array();
    for (const auto& s : list) out.push_back(s);
    return out;
  };
  Json j = Json::object();
  j["instance_id"] = spec.instance_id;
  j["app_name"] = spec.app_name;
  j["executable"] = spec.executable.string();
  j["args"] = strings(spec.args);
  j["env"] = strings(spec.env);
  j["uid"] = spec.uid;
  j["gid"] = spec.gid;
  j["root_image"] = spec.root_image.string();
  j["runtime_binds"] = paths(spec.runtime_binds);
  j["tmp_size_bytes"] = spec.tmp_size_bytes;
  if (spec.storage) {
    Json storage = Json::object();
    storage["image"] = spec.storage->image.string();
    storage["size_kb"] = spec.storage->size_kb;
    storage["mount_point"] = std::string(kStorageMountPoint);
    j["storage"] = std::move(storage);
  } else {
    j["storage"] = nullptr;
  }
  j["devices"] = paths(spec.devices);
  Json limits = Json::object();
  limits["memory_bytes"] = spec.limits.memory_bytes;
  limits["pids_max"] = spec.limits.pids_max;
  if (spec.limits.cpu) {
    limits["cpu"] = *spec.limits.cpu;
  } else {
    limits["cpu"] = nullptr;
  }
  j["limits"] = std::move(limits);
  j["seccomp_class"] = std::string(SeccompClassName(spec.seccomp_class));
  j["network"] = std::string(NetworkModeName(spec.network));
  j["hostname"] = spec.hostname;
  j["effective_hostname"] = spec.EffectiveHostname();
  j["max_open_files"] = spec.max_open_files;
  j["stdout_path"] = spec.stdout_path.string();
  j["stderr_path"] = spec.stderr_path.string();
  return j;
}

}  // namespace moat::device::sandbox
