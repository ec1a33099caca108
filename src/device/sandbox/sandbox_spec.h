// SandboxSpec: a plain value describing one sandboxed launch of one app.
//
// The supervisor (policy) turns a manifest, the board's hardware definition and the device policy
// into a SandboxSpec; the launcher (mechanism, launcher.h) builds exactly that sandbox or fails.
// Nothing in a spec widens the sandbox beyond what it lists: every field is a grant, and an empty
// field grants nothing. A spec holds no file descriptors and no secrets, so it can be copied,
// compared and printed (`moatctl app show --spec` prints Describe()).
//
// Validate() checks the value on its own (names, paths, ranges); the launcher additionally checks
// the host side (that the image, binds and devices exist and have the right types) when it plans
// the launch. Errors are kInvalidArgument and name the offending field.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace moat::device::sandbox {

// Which seccomp allowlist the app runs under (seccomp_policy.h has the decision tables).
enum class SeccompClass {
  kDefault,   // a high-level app: files, threads, processes, sockets (AF_UNIX/INET/INET6)
  kRealTime,  // stricter: no process creation (threads only), AF_UNIX sockets only, may mlock
};
std::string_view SeccompClassName(SeccompClass c);

// The app's network namespace is always new and private. What goes into it:
enum class NetworkMode {
  kNone,        // only `lo`, up; no route anywhere else
  kConfigured,  // `lo` plus whatever the launch's network hook sets up from the parent
                // (LaunchOptions::network_hook in launcher.h; Moat's is AppNetwork in
                // app_network.h: a veth pair with a per-app nftables table)
};
std::string_view NetworkModeName(NetworkMode m);

// Limits enforced by cgroups (memory, pids, cpuset). Defaults are Moat's documented per-app
// defaults; the device policy may override them, the app cannot.
struct CgroupLimits {
  static constexpr uint64_t kDefaultMemoryBytes = 64ull << 20;
  static constexpr uint32_t kDefaultPidsMax = 64;

  uint64_t memory_bytes = kDefaultMemoryBytes;  // RAM (+ swap: none), includes its /tmp
  uint32_t pids_max = kDefaultPidsMax;          // processes and threads, including the init
  std::optional<uint32_t> cpu;                  // pin to this CPU (cpuset); nullopt: any CPU

  bool operator==(const CgroupLimits&) const = default;
};

// Persistent private storage, mounted read-write at kStorageMountPoint. The storage is an ext4
// filesystem image of exactly `size_kb` KiB (made by CreateStorageImage in storage.h), loop-mounted
// for the app, so the quota is the filesystem's size and is enforced by the kernel.
struct MutableStorage {
  std::filesystem::path image;  // host path of the image file
  uint64_t size_kb = 0;         // must match the image's size

  bool operator==(const MutableStorage&) const = default;
};

inline constexpr std::string_view kStorageMountPoint = "/mnt/storage";

struct SandboxSpec {
  // Identity. `instance_id` names the moatd instance (several may run on one machine); together
  // with `app_name` it makes cgroup paths unique. Both are tokens: [A-Za-z0-9_.-]{1,64}, not
  // starting with '.'.
  std::string instance_id;
  std::string app_name;

  // What runs. `executable` is an absolute path inside the sandbox; argv[0] is `executable` and
  // `args` follow. `env` is the complete environment ("NAME=value"); nothing is inherited.
  std::filesystem::path executable;
  std::vector<std::string> args;
  std::vector<std::string> env;

  // Who runs it: the app's own uid and gid (never 0). Supplementary groups are cleared.
  uid_t uid = 0;
  gid_t gid = 0;

  // The root: the app image directory, read-only. Each top-level entry of the image is bound at
  // the same name under "/", except the names the sandbox provides itself (proc, dev, tmp, mnt),
  // which are skipped. Top-level symlinks are recreated, not followed.
  std::filesystem::path root_image;

  // Read-only host paths bound at the same path inside (the dynamic loader and the libraries a
  // dynamic binary links; empty for a static binary). Each must not lie under an image entry or
  // under another bind.
  std::vector<std::filesystem::path> runtime_binds;

  // /tmp: a private tmpfs of this size (counted against the memory limit).
  uint64_t tmp_size_bytes = 1 << 20;

  // Mutable storage; nullopt: no writable path except /tmp.
  std::optional<MutableStorage> storage;

  // Device nodes visible in /dev besides null, zero and urandom: host paths under /dev/, each a
  // character or block device, bound at the same path.
  std::vector<std::filesystem::path> devices;

  CgroupLimits limits;
  SeccompClass seccomp_class = SeccompClass::kDefault;
  NetworkMode network = NetworkMode::kNone;

  // The UTS hostname inside; empty means the app name with characters a hostname cannot hold
  // ('_') turned into '-'.
  std::string hostname;

  // RLIMIT_NOFILE (soft = hard).
  uint32_t max_open_files = 256;

  // Where stdout and stderr go: host files opened for append (created 0640 if missing); empty
  // means /dev/null unless the launch passes descriptors (LaunchIo in launcher.h). stdin is
  // always /dev/null.
  std::filesystem::path stdout_path;
  std::filesystem::path stderr_path;

  // The hostname actually used (see `hostname`).
  std::string EffectiveHostname() const;

  // Checks the value alone; see the file comment.
  Result<void> Validate() const;

  // A multi-line, human-readable description of everything the sandbox grants.
  std::string Describe() const;

  bool operator==(const SandboxSpec&) const = default;
};

// The spec as a JSON object, for `moatctl app show --spec` and tools: every field by its name
// in SandboxSpec (paths as strings, sizes in bytes or KiB as the field says, optionals as null,
// enums by SeccompClassName / NetworkModeName), plus "effective_hostname". One way: a spec is
// built by the supervisor from a manifest, never read back from JSON.
Json SpecToJson(const SandboxSpec& spec);

// True if `name` is a valid instance id or app name (see SandboxSpec).
bool IsValidSandboxName(std::string_view name);

}  // namespace moat::device::sandbox
