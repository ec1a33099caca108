#include "device/sandbox/cgroups.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <set>
#include <span>
#include <thread>

#include "core/file.h"

namespace moat::device::sandbox {
namespace {

constexpr std::string_view kMemory = "memory";
constexpr std::string_view kPids = "pids";
constexpr std::string_view kCpuset = "cpuset";
constexpr auto kRemoveTimeout = std::chrono::seconds(2);

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

struct Mount {
  std::filesystem::path point;
  std::string root;  // the hierarchy path mounted there ("/" normally)
};

struct Mounts {
  std::map<std::string, Mount, std::less<>> v1;  // controller -> mount
  std::optional<Mount> v2;
};

Mounts ParseMountinfo(std::string_view mountinfo) {
  Mounts mounts;
  for (std::string_view line : Split(mountinfo, '\n')) {
    std::vector<std::string_view> fields = Split(line, ' ');
    auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 10 || dash == fields.end() || fields.end() - dash < 4) continue;
    std::string_view fstype = *(dash + 1);
    std::string_view super_options = *(dash + 3);
    Mount m{Unescape(fields[4]), Unescape(fields[3])};
    if (fstype == "cgroup2") {
      if (!mounts.v2) mounts.v2 = m;
    } else if (fstype == "cgroup") {
      for (std::string_view opt : Split(super_options, ',')) {
        if (opt == kMemory || opt == kPids || opt == kCpuset) {
          mounts.v1.try_emplace(std::string(opt), m);
        }
      }
    }
  }
  return mounts;
}

struct SelfGroups {
  std::map<std::string, std::string, std::less<>> v1;  // controller -> path
  std::optional<std::string> v2;
};

SelfGroups ParseSelfCgroup(std::string_view text) {
  SelfGroups groups;
  for (std::string_view line : Split(text, '\n')) {
    size_t first = line.find(':');
    size_t second = first == std::string_view::npos ? first : line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    std::string_view hierarchy = line.substr(0, first);
    std::string_view controllers = line.substr(first + 1, second - first - 1);
    std::string path(line.substr(second + 1));
    if (hierarchy == "0" && controllers.empty()) {
      groups.v2 = path;
    } else {
      for (std::string_view c : Split(controllers, ','))
        groups.v1.try_emplace(std::string(c), path);
    }
  }
  return groups;
}

// The caller's group relative to the mount's root, or an error if it lies outside it.
Result<std::filesystem::path> RelativeGroup(const Mount& mount, std::string_view group,
                                            std::string_view controller) {
  std::string root = mount.root == "/" ? "" : mount.root;
  std::string g(group);
  if (g == "/") g = "";
  if (g.compare(0, root.size(), root) != 0 || (g.size() > root.size() && g[root.size()] != '/')) {
    return Fail(ErrorCode::kFailedPrecondition,
                "cgroup {}: our group {} is outside the hierarchy mounted at {} (root {})",
                controller, group, mount.point.string(), mount.root);
  }
  std::string rel = g.substr(root.size());
  while (!rel.empty() && rel.front() == '/') rel.erase(rel.begin());
  return std::filesystem::path(rel);
}

Result<std::optional<CgroupController>> ResolveController(const Mounts& mounts,
                                                          const SelfGroups& self,
                                                          std::string_view v2_controllers,
                                                          std::string_view controller) {
  if (auto it = mounts.v1.find(controller); it != mounts.v1.end()) {
    auto group = self.v1.find(controller);
    if (group == self.v1.end()) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "cgroup {}: mounted at {} but missing from /proc/self/cgroup", controller,
                  it->second.point.string());
    }
    MOAT_ASSIGN_OR_RETURN(auto rel, RelativeGroup(it->second, group->second, controller));
    return std::optional<CgroupController>(
        CgroupController{CgroupVersion::kV1, it->second.point, rel});
  }
  if (mounts.v2 && self.v2) {
    for (std::string_view c : Split(v2_controllers, ' ')) {
      while (!c.empty() && (c.back() == '\n' || c.back() == '\r')) c.remove_suffix(1);
      if (c == controller) {
        MOAT_ASSIGN_OR_RETURN(auto rel, RelativeGroup(*mounts.v2, *self.v2, controller));
        return std::optional<CgroupController>(
            CgroupController{CgroupVersion::kV2, mounts.v2->point, rel});
      }
    }
  }
  return std::optional<CgroupController>();
}

Result<void> WriteCgroupFile(const std::filesystem::path& file, std::string_view value) {
  MOAT_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(file, O_WRONLY));
  ssize_t n;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Fail(ErrnoError(fmt::format("write '{}' to", value), file, errno));
  return Ok();
}

Result<std::string> ReadCgroupFile(const std::filesystem::path& file) {
  MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(file, 1 << 20));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

bool Exists(const std::filesystem::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

Result<void> MakeGroupDir(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Fail(ErrnoError("mkdir cgroup", dir, errno));
  }
  return Ok();
}

// rmdir, retrying while the kernel still counts exiting tasks (EBUSY right after a kill).
Result<void> RemoveGroupDir(const std::filesystem::path& dir) {
  auto deadline = std::chrono::steady_clock::now() + kRemoveTimeout;
  for (;;) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return Ok();
    if (errno != EBUSY || std::chrono::steady_clock::now() > deadline) {
      return Fail(ErrnoError("rmdir cgroup", dir, errno));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Kills everything in `dir` and its descendants, then removes them, deepest first.
Result<void> KillAndRemoveTree(const std::filesystem::path& dir) {
  if (!Exists(dir)) return Ok();
  std::error_code ec;
  std::vector<std::filesystem::path> children;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec)) children.push_back(it->path());
  }
  for (const auto& child : children) MOAT_TRY(KillAndRemoveTree(child));
  auto deadline = std::chrono::steady_clock::now() + kRemoveTimeout;
  for (;;) {
    if (Exists(dir / "cgroup.kill")) {
      MOAT_TRY(WriteCgroupFile(dir / "cgroup.kill", "1"));
    }
    MOAT_ASSIGN_OR_RETURN(std::string procs, ReadCgroupFile(dir / "cgroup.procs"));
    if (procs.empty()) break;
    // v1 has no cgroup.kill: SIGKILL each process (a sandbox init takes its namespace with it).
    for (std::string_view line : Split(procs, '\n')) {
      pid_t pid = static_cast<pid_t>(std::atoi(std::string(line).c_str()));
      if (pid > 1) ::kill(pid, SIGKILL);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Fail(ErrorCode::kUnavailable, "cgroup {}: processes still running after SIGKILL: {}",
                  dir.string(), procs);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return RemoveGroupDir(dir);
}

std::string VersionName(CgroupVersion v) { return v == CgroupVersion::kV1 ? "v1" : "v2"; }

// The distinct hierarchies in `layout` with the controllers each one serves.
struct Hierarchy {
  CgroupController where;
  std::vector<std::string_view> controllers;
};

std::vector<Hierarchy> Hierarchies(const CgroupLayout& layout, bool with_cpuset) {
  std::vector<Hierarchy> out;
  auto add = [&out](const CgroupController& c, std::string_view name) {
    for (auto& h : out) {
      if (h.where == c) {
        h.controllers.push_back(name);
        return;
      }
    }
    out.push_back({c, {name}});
  };
  add(layout.memory, kMemory);
  add(layout.pids, kPids);
  if (with_cpuset && layout.cpuset) add(*layout.cpuset, kCpuset);
  return out;
}

bool Has(const std::vector<std::string_view>& v, std::string_view x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

Result<void> ApplyLimits(const Hierarchy& h, const std::filesystem::path& instance_dir,
                         const std::filesystem::path& app_dir, const CgroupLimits& limits) {
  const bool v1 = h.where.version == CgroupVersion::kV1;
  if (Has(h.controllers, kMemory)) {
    std::string bytes = std::to_string(limits.memory_bytes);
    if (v1) {
      MOAT_TRY(WriteCgroupFile(app_dir / "memory.limit_in_bytes", bytes));
      // No swap either: memory+swap gets the same limit (absent without swap accounting).
      if (Exists(app_dir / "memory.memsw.limit_in_bytes")) {
        MOAT_TRY(WriteCgroupFile(app_dir / "memory.memsw.limit_in_bytes", bytes));
      }
    } else {
      MOAT_TRY(WriteCgroupFile(app_dir / "memory.max", bytes));
      if (Exists(app_dir / "memory.swap.max")) {
        MOAT_TRY(WriteCgroupFile(app_dir / "memory.swap.max", "0"));
      }
      // An OOM kill takes the whole sandbox, never leaving a half-alive app.
      if (Exists(app_dir / "memory.oom.group")) {
        MOAT_TRY(WriteCgroupFile(app_dir / "memory.oom.group", "1"));
      }
    }
  }
  if (Has(h.controllers, kPids)) {
    MOAT_TRY(WriteCgroupFile(app_dir / "pids.max", std::to_string(limits.pids_max)));
  }
  if (Has(h.controllers, kCpuset) && limits.cpu) {
    if (v1) {
      // v1 cpusets start empty and refuse tasks until cpus and mems are set at every level.
      std::filesystem::path parent = instance_dir.parent_path();
      MOAT_ASSIGN_OR_RETURN(std::string mems, ReadCgroupFile(parent / "cpuset.mems"));
      MOAT_ASSIGN_OR_RETURN(std::string cpus, ReadCgroupFile(parent / "cpuset.cpus"));
      MOAT_ASSIGN_OR_RETURN(std::string instance_cpus,
                            ReadCgroupFile(instance_dir / "cpuset.cpus"));
      if (instance_cpus.empty()) {
        MOAT_TRY(WriteCgroupFile(instance_dir / "cpuset.cpus", cpus));
        MOAT_TRY(WriteCgroupFile(instance_dir / "cpuset.mems", mems));
      }
      MOAT_TRY(WriteCgroupFile(app_dir / "cpuset.cpus", std::to_string(*limits.cpu)));
      MOAT_TRY(WriteCgroupFile(app_dir / "cpuset.mems", mems));
    } else {
      MOAT_TRY(WriteCgroupFile(app_dir / "cpuset.cpus", std::to_string(*limits.cpu)));
    }
  }
  return Ok();
}

}  // namespace

std::string CgroupLayout::Describe() const {
  auto one = [](std::string_view name, const CgroupController& c) {
    return fmt::format("{} {} at {}", name, VersionName(c.version), c.Base().string());
  };
  std::string out = one(kMemory, memory) + "; " + one(kPids, pids);
  if (cpuset) out += "; " + one(kCpuset, *cpuset);
  return out;
}

Result<CgroupLayout> ResolveCgroupLayout(std::string_view mountinfo,
                                         std::string_view proc_self_cgroup,
                                         std::string_view v2_controllers) {
  Mounts mounts = ParseMountinfo(mountinfo);
  SelfGroups self = ParseSelfCgroup(proc_self_cgroup);
  CgroupLayout layout;
  for (auto [name, slot] : {std::pair{kMemory, &layout.memory}, std::pair{kPids, &layout.pids}}) {
    MOAT_ASSIGN_OR_RETURN(auto c, ResolveController(mounts, self, v2_controllers, name));
    if (!c) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "cgroup controller '{}' is not available: no v1 hierarchy has it and the v2 "
                  "group does not offer it (cgroup.controllers: '{}')",
                  name, v2_controllers);
    }
    *slot = *c;
  }
  MOAT_ASSIGN_OR_RETURN(layout.cpuset, ResolveController(mounts, self, v2_controllers, kCpuset));
  return layout;
}

Result<CgroupLayout> DetectCgroupLayout() {
  MOAT_ASSIGN_OR_RETURN(std::string mountinfo, ReadFile("/proc/self/mountinfo", 1 << 20));
  MOAT_ASSIGN_OR_RETURN(std::string self, ReadFile("/proc/self/cgroup", 1 << 16));
  std::string v2_controllers;
  Mounts mounts = ParseMountinfo(mountinfo);
  SelfGroups groups = ParseSelfCgroup(self);
  if (mounts.v2 && groups.v2) {
    auto rel = RelativeGroup(*mounts.v2, *groups.v2, "v2");
    if (rel) {
      std::filesystem::path base = rel->empty() ? mounts.v2->point : mounts.v2->point / *rel;
      auto text = ReadFile(base / "cgroup.controllers", 1 << 12);
      if (text) v2_controllers = *text;
    }
  }
  return ResolveCgroupLayout(mountinfo, self, v2_controllers);
}

Result<AppCgroup> AppCgroup::Create(const CgroupLayout& layout, std::string_view instance,
                                    std::string_view app, const CgroupLimits& limits) {
  if (!IsValidSandboxName(instance) || !IsValidSandboxName(app)) {
    return Fail(ErrorCode::kInvalidArgument, "cgroup names '{}'/'{}' are not valid names", instance,
                app);
  }
  if (limits.cpu && !layout.cpuset) {
    return Fail(ErrorCode::kFailedPrecondition,
                "app '{}' is pinned to CPU {}, but no cpuset controller is available", app,
                *limits.cpu);
  }
  AppCgroup result(std::vector<Group>{});
  for (const Hierarchy& h : Hierarchies(layout, limits.cpu.has_value())) {
    std::filesystem::path base = h.where.Base();
    std::filesystem::path instance_dir = base / fmt::format("moat-{}", instance);
    std::filesystem::path app_dir = instance_dir / std::string(app);
    // A group of this name is a leftover of a run that did not clean up (a crash).
    MOAT_TRY(KillAndRemoveTree(app_dir));
    if (h.where.version == CgroupVersion::kV2) {
      std::string enable;
      for (std::string_view c : h.controllers)
        enable += fmt::format("{}+{}", enable.empty() ? "" : " ", c);
      if (auto r = WriteCgroupFile(base / "cgroup.subtree_control", enable); !r) {
        return Fail(r.error().WithContext(
            "cgroup v2: cannot delegate controllers (moatd must run in a delegated group whose "
            "own processes live in a leaf)"));
      }
      MOAT_TRY(MakeGroupDir(instance_dir));
      MOAT_TRY(WriteCgroupFile(instance_dir / "cgroup.subtree_control", enable));
    } else {
      MOAT_TRY(MakeGroupDir(instance_dir));
    }
    if (::mkdir(app_dir.c_str(), 0755) != 0)
      return Fail(ErrnoError("mkdir cgroup", app_dir, errno));
    result.groups_.push_back({h.where.version, instance_dir, app_dir});
    MOAT_TRY(ApplyLimits(h, instance_dir, app_dir, limits));
  }
  return result;
}

AppCgroup& AppCgroup::operator=(AppCgroup&& other) noexcept {
  if (this != &other) {
    (void)Remove();
    groups_ = std::exchange(other.groups_, {});
  }
  return *this;
}

AppCgroup::~AppCgroup() { (void)Remove(); }

Result<void> AppCgroup::AddProcess(pid_t pid) const {
  for (const Group& g : groups_) {
    MOAT_TRY(WriteCgroupFile(g.app_dir / "cgroup.procs", std::to_string(pid)));
  }
  return Ok();
}

Result<void> AppCgroup::Remove() {
  while (!groups_.empty()) {
    const Group& g = groups_.back();
    MOAT_TRY(RemoveGroupDir(g.app_dir));
    // The instance group goes when its last app does; another app still there keeps it.
    if (::rmdir(g.instance_dir.c_str()) != 0 && errno != ENOTEMPTY && errno != EBUSY &&
        errno != ENOENT) {
      return Fail(ErrnoError("rmdir cgroup", g.instance_dir, errno));
    }
    groups_.pop_back();
  }
  return Ok();
}

std::vector<std::filesystem::path> AppCgroup::Directories() const {
  std::vector<std::filesystem::path> out;
  for (const Group& g : groups_) out.push_back(g.app_dir);
  return out;
}

Result<void> RemoveInstanceCgroups(const CgroupLayout& layout, std::string_view instance) {
  if (!IsValidSandboxName(instance)) {
    return Fail(ErrorCode::kInvalidArgument, "'{}' is not a valid instance id", instance);
  }
  for (const Hierarchy& h : Hierarchies(layout, true)) {
    MOAT_TRY(KillAndRemoveTree(h.where.Base() / fmt::format("moat-{}", instance)));
  }
  return Ok();
}

}  // namespace moat::device::sandbox
