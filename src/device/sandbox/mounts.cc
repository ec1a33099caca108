#include "device/sandbox/mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <system_error>

#include "core/file.h"
#include "device/sandbox/storage.h"

namespace moat::device::sandbox {
namespace {

// Where the child stages: a tmpfs mounted over the host's /tmp inside the new mount namespace
// (invisible to the host), into which it pivots; the host tree is then at kOldRoot and the app's
// root is built at kNewRoot.
constexpr const char* kStaging = "/tmp";
constexpr const char* kOldRoot = "/oldroot";
constexpr const char* kNewRoot = "/newroot";

// The top-level names the sandbox provides itself; image entries with these names are skipped.
constexpr std::string_view kReservedTopLevel[] = {"proc", "dev", "tmp", "mnt"};

constexpr unsigned long kReadOnlyBind = MS_RDONLY | MS_NOSUID | MS_NODEV;

std::string Host(const std::filesystem::path& p) { return std::string(kOldRoot) + p.native(); }
std::string Inside(const std::filesystem::path& p) {
  return p == "/" ? std::string(kNewRoot) : std::string(kNewRoot) + p.native();
}

class PlanBuilder {
 public:
  void MakePrivate() {
    Add({.kind = MountOpKind::kMakePrivate,
         .target = "/",
         .what = "make mounts private",
         .subject = "/"});
  }
  void MountFs(std::string fstype, std::string target, unsigned long flags, std::string data,
               std::string subject) {
    Add({.kind = MountOpKind::kMountFs,
         .source = fstype,
         .target = std::move(target),
         .fstype = fstype,
         .flags = flags,
         .data = std::move(data),
         .what = "mount " + fstype + " on",
         .subject = std::move(subject)});
  }
  void Mkdir(std::string target, std::string subject, mode_t mode = 0755) {
    Add({.kind = MountOpKind::kMkdir,
         .target = std::move(target),
         .mode = mode,
         .what = "mkdir",
         .subject = std::move(subject)});
  }
  void Mkfile(std::string target, std::string subject) {
    Add({.kind = MountOpKind::kMkfile,
         .target = std::move(target),
         .mode = 0444,
         .what = "create mount point",
         .subject = std::move(subject)});
  }
  void Symlink(std::string link_target, std::string path, std::string subject) {
    Add({.kind = MountOpKind::kSymlink,
         .source = std::move(link_target),
         .target = std::move(path),
         .what = "symlink",
         .subject = std::move(subject)});
  }
  void Bind(std::string source, std::string target, unsigned long flags, std::string subject) {
    Add({.kind = MountOpKind::kBind,
         .source = std::move(source),
         .target = std::move(target),
         .flags = flags,
         .what = "bind-mount",
         .subject = std::move(subject)});
  }
  void RemountBind(std::string target, unsigned long flags, std::string subject) {
    Add({.kind = MountOpKind::kRemountBind,
         .target = std::move(target),
         .flags = flags,
         .what = "remount",
         .subject = std::move(subject)});
  }
  void LoopMount(std::string image, std::string target, unsigned long flags, std::string subject) {
    Add({.kind = MountOpKind::kLoopMount,
         .source = std::move(image),
         .target = std::move(target),
         .fstype = "ext4",
         .flags = flags,
         .what = "loop-mount storage",
         .subject = std::move(subject)});
  }
  void PivotRoot(std::string new_root, std::string put_old, std::string subject) {
    Add({.kind = MountOpKind::kPivotRoot,
         .source = std::move(new_root),
         .target = std::move(put_old),
         .what = "pivot_root",
         .subject = std::move(subject)});
  }
  void PivotInto(std::string new_root, std::string subject) {
    Add({.kind = MountOpKind::kPivotInto,
         .target = std::move(new_root),
         .what = "pivot_root",
         .subject = std::move(subject)});
  }
  void Detach(std::string target, std::string subject) {
    Add({.kind = MountOpKind::kDetach,
         .target = std::move(target),
         .what = "detach",
         .subject = std::move(subject)});
  }

  // Creates the directories leading to `inside` (a path in the sandbox) in the new root's tmpfs,
  // once each.
  void MkdirParents(const std::filesystem::path& inside) {
    std::filesystem::path partial = "/";
    std::filesystem::path parent = inside.parent_path();
    for (const auto& part : parent.relative_path()) {
      partial /= part;
      if (created_.insert(partial.native()).second) Mkdir(Inside(partial), partial.native());
    }
  }
  void MarkCreated(const std::filesystem::path& inside) { created_.insert(inside.native()); }

  MountPlan Take() { return std::move(plan_); }

 private:
  void Add(MountOp op) { plan_.ops.push_back(std::move(op)); }
  MountPlan plan_;
  std::set<std::string> created_;
};

enum class EntryType { kDirectory, kFile, kSymlink };

Result<EntryType> HostEntryType(const std::filesystem::path& p, std::string_view what,
                                bool follow) {
  struct stat st {};
  int rc = follow ? ::stat(p.c_str(), &st) : ::lstat(p.c_str(), &st);
  if (rc != 0) return Fail(ErrnoError(fmt::format("stat {}", what), p, errno));
  if (S_ISDIR(st.st_mode)) return EntryType::kDirectory;
  if (S_ISREG(st.st_mode)) return EntryType::kFile;
  if (S_ISLNK(st.st_mode)) return EntryType::kSymlink;
  return Fail(ErrorCode::kInvalidArgument, "{} {} is not a directory, regular file or symlink",
              what, p.string());
}

Result<std::filesystem::path> Canonical(const std::filesystem::path& p, std::string_view what) {
  std::error_code ec;
  std::filesystem::path c = std::filesystem::canonical(p, ec);
  if (ec) return Fail(ErrnoError(fmt::format("resolve {}", what), p, ec.value()));
  return c;
}

bool IsReserved(std::string_view name) {
  return std::find(std::begin(kReservedTopLevel), std::end(kReservedTopLevel), name) !=
         std::end(kReservedTopLevel);
}

int PivotRoot(const char* new_root, const char* put_old) {
  return static_cast<int>(::syscall(SYS_pivot_root, new_root, put_old));
}

}  // namespace

std::string MountPlan::Describe() const {
  std::string out;
  for (size_t i = 0; i < ops.size(); ++i) {
    const MountOp& op = ops[i];
    out += fmt::format("{:>3} {} {}", i, op.what, op.subject);
    if (!op.data.empty()) out += fmt::format(" ({})", op.data);
    out += "\n";
  }
  return out;
}

Result<MountPlan> BuildMountPlan(const SandboxSpec& spec) {
  MOAT_TRY(spec.Validate());
  PlanBuilder b;

  // 1. Private mounts, staging root, pivot: the host tree is now under /oldroot.
  b.MakePrivate();
  b.MountFs("tmpfs", kStaging, MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=65536,mode=0700",
            "staging root");
  b.Mkdir(std::string(kStaging) + kOldRoot, "staging /oldroot");
  b.Mkdir(std::string(kStaging) + kNewRoot, "staging /newroot");
  b.PivotRoot(kStaging, std::string(kStaging) + kOldRoot, "into the staging root");

  // 2. The new root: a tmpfs that only ever holds mount points; read-only at the end.
  b.MountFs("tmpfs", kNewRoot, MS_NOSUID | MS_NODEV, "size=1048576,mode=0755", "/ (new root)");

  // 3. The app image, entry by entry, read-only.
  MOAT_ASSIGN_OR_RETURN(EntryType root_type, HostEntryType(spec.root_image, "root image", true));
  if (root_type != EntryType::kDirectory) {
    return Fail(ErrorCode::kInvalidArgument, "root image {} is not a directory",
                spec.root_image.string());
  }
  // Host sources are resolved here, in the launcher: the child sees the host under /oldroot,
  // where an absolute symlink on the way to a source would point into the staging root.
  MOAT_ASSIGN_OR_RETURN(std::filesystem::path root_image, Canonical(spec.root_image, "root image"));
  std::vector<std::filesystem::path> entries;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(root_image, ec), end; !ec && it != end;
       it.increment(ec)) {
    entries.push_back(it->path().filename());
  }
  if (ec) {
    return Fail(ErrorCode::kIo, "list root image {}: {}", spec.root_image.string(), ec.message());
  }
  std::sort(entries.begin(), entries.end());
  std::set<std::string> image_names;
  for (const auto& name : entries) {
    if (IsReserved(name.native())) continue;
    std::filesystem::path host = root_image / name;
    std::filesystem::path inside = std::filesystem::path("/") / name;
    MOAT_ASSIGN_OR_RETURN(EntryType type, HostEntryType(host, "root image entry", false));
    image_names.insert(name.native());
    b.MarkCreated(inside);
    switch (type) {
      case EntryType::kDirectory:
        b.Mkdir(Inside(inside), inside.native());
        b.Bind(Host(host), Inside(inside), kReadOnlyBind, host.native() + " -> " + inside.native());
        break;
      case EntryType::kFile:
        b.Mkfile(Inside(inside), inside.native());
        b.Bind(Host(host), Inside(inside), kReadOnlyBind, host.native() + " -> " + inside.native());
        break;
      case EntryType::kSymlink: {
        // SECURITY: recreated, never followed on the host: an absolute link in the image must
        // resolve inside the sandbox, not to the host path of the same name.
        std::filesystem::path link = std::filesystem::read_symlink(host, ec);
        if (ec) {
          return Fail(ErrorCode::kIo, "readlink root image entry {}: {}", host.string(),
                      ec.message());
        }
        b.Symlink(link.native(), Inside(inside), inside.native() + " -> " + link.native());
        break;
      }
    }
  }

  // 4. Runtime binds (loader, libraries), read-only.
  for (const auto& bind : spec.runtime_binds) {
    std::string top = (*bind.relative_path().begin()).native();
    if (image_names.count(top) != 0) {
      return Fail(ErrorCode::kInvalidArgument,
                  "runtime bind {} lies under the app image's /{}, which is already bound",
                  bind.string(), top);
    }
    MOAT_ASSIGN_OR_RETURN(EntryType type, HostEntryType(bind, "runtime bind", true));
    MOAT_ASSIGN_OR_RETURN(std::filesystem::path source, Canonical(bind, "runtime bind"));
    b.MkdirParents(bind);
    b.MarkCreated(bind);
    if (type == EntryType::kDirectory) {
      b.Mkdir(Inside(bind), bind.native());
    } else {
      b.Mkfile(Inside(bind), bind.native());
    }
    b.Bind(Host(source), Inside(bind), kReadOnlyBind, source.native() + " -> " + bind.native());
  }

  // 5. /proc for the sandbox's own PID namespace (the child is its init when it mounts it).
  b.Mkdir(Inside("/proc"), "/proc");
  b.MountFs("proc", Inside("/proc"), MS_NOSUID | MS_NODEV | MS_NOEXEC, "", "/proc");
  b.Bind(Inside("/proc/sys"), Inside("/proc/sys"), MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
         "/proc/sys (read-only)");

  // 6. /tmp: private, size-limited, the app's.
  b.Mkdir(Inside("/tmp"), "/tmp");
  b.MountFs("tmpfs", Inside("/tmp"), MS_NOSUID | MS_NODEV | MS_NOEXEC,
            fmt::format("size={},mode=0700,uid={},gid={}", spec.tmp_size_bytes, spec.uid, spec.gid),
            "/tmp");

  // 7. /dev: a tmpfs with only the listed nodes, bound from the host, then made read-only.
  b.Mkdir(Inside("/dev"), "/dev");
  b.MountFs("tmpfs", Inside("/dev"), MS_NOSUID | MS_NOEXEC, "size=65536,mode=0755", "/dev");
  b.MarkCreated("/dev");
  std::vector<std::filesystem::path> nodes = {"/dev/null", "/dev/zero", "/dev/urandom"};
  nodes.insert(nodes.end(), spec.devices.begin(), spec.devices.end());
  for (const auto& node : nodes) {
    struct stat st {};
    if (::stat(node.c_str(), &st) != 0) return Fail(ErrnoError("stat device", node, errno));
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
      return Fail(ErrorCode::kInvalidArgument, "device {} is not a character or block device",
                  node.string());
    }
    MOAT_ASSIGN_OR_RETURN(std::filesystem::path source, Canonical(node, "device"));
    b.MkdirParents(node);
    b.Mkfile(Inside(node), node.native());
    // Device binds keep their dev semantics (no MS_NODEV) and stay writable: the node's own
    // permissions decide, and the app is not root.
    b.Bind(Host(source), Inside(node), MS_NOSUID | MS_NOEXEC,
           source.native() + " -> " + node.native());
  }
  b.Symlink("/proc/self/fd", Inside("/dev/fd"), "/dev/fd");
  b.Symlink("/proc/self/fd/0", Inside("/dev/stdin"), "/dev/stdin");
  b.Symlink("/proc/self/fd/1", Inside("/dev/stdout"), "/dev/stdout");
  b.Symlink("/proc/self/fd/2", Inside("/dev/stderr"), "/dev/stderr");
  b.RemountBind(Inside("/dev"), MS_RDONLY | MS_NOSUID | MS_NOEXEC, "/dev (read-only)");

  // 8. Mutable storage.
  if (spec.storage) {
    MOAT_TRY(CheckStorageImage(spec.storage->image, spec.storage->size_kb));
    MOAT_ASSIGN_OR_RETURN(std::filesystem::path dir,
                          Canonical(spec.storage->image.parent_path(), "storage directory"));
    std::filesystem::path image = dir / spec.storage->image.filename();
    std::filesystem::path mount_point(kStorageMountPoint);
    b.MkdirParents(mount_point);
    b.Mkdir(Inside(mount_point), mount_point.native());
    b.LoopMount(Host(image), Inside(mount_point), MS_NOSUID | MS_NODEV | MS_NOEXEC,
                image.native() + " -> " + mount_point.native());
  }

  // 9. Leave the host behind: detach it, pivot into the new root, make "/" read-only.
  b.Detach(kOldRoot, "the host's root");
  b.PivotInto(kNewRoot, "into the new root");
  b.RemountBind("/", MS_RDONLY | MS_NOSUID | MS_NODEV, "/ (read-only)");
  return b.Take();
}

StepStatus ApplyMountPlan(const MountPlan& plan) {
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    const MountOp& op = plan.ops[i];
    const uint32_t index = static_cast<uint32_t>(i);
    const char* target = op.target.c_str();
    switch (op.kind) {
      case MountOpKind::kMakePrivate:
        if (::mount(nullptr, target, nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
          return StepStatus::FromErrno(index);
        }
        break;
      case MountOpKind::kMountFs:
        if (::mount(op.source.c_str(), target, op.fstype.c_str(), op.flags,
                    op.data.empty() ? nullptr : op.data.c_str()) != 0) {
          return StepStatus::FromErrno(index);
        }
        break;
      case MountOpKind::kBind:
        // Not MS_REC: mounts below the source stay invisible rather than appearing writable.
        if (::mount(op.source.c_str(), target, nullptr, MS_BIND, nullptr) != 0) {
          return StepStatus::FromErrno(index);
        }
        if (::mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | op.flags, nullptr) != 0) {
          return StepStatus::FromErrno(index);
        }
        break;
      case MountOpKind::kRemountBind:
        if (::mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | op.flags, nullptr) != 0) {
          return StepStatus::FromErrno(index);
        }
        break;
      case MountOpKind::kMkdir:
        if (::mkdir(target, op.mode) != 0 && errno != EEXIST) return StepStatus::FromErrno(index);
        break;
      case MountOpKind::kMkfile: {
        int fd = ::open(target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, op.mode);
        if (fd < 0) return StepStatus::FromErrno(index);
        ::close(fd);
        break;
      }
      case MountOpKind::kSymlink:
        if (::symlink(op.source.c_str(), target) != 0) return StepStatus::FromErrno(index);
        break;
      case MountOpKind::kLoopMount: {
        StepStatus s = LoopMountImage(op.source.c_str(), "/oldroot/dev/loop-control",
                                      "/oldroot/dev/loop", target, op.flags);
        if (!s.ok()) return StepStatus::Error(s.err, index);
        break;
      }
      case MountOpKind::kPivotRoot:
        if (PivotRoot(op.source.c_str(), target) != 0 || ::chdir("/") != 0) {
          return StepStatus::FromErrno(index);
        }
        break;
      case MountOpKind::kPivotInto:
        // pivot_root(".", ".") stacks the old root on top of the new one at "/"; detaching "."
        // then removes the old root (runc does the same) without needing a directory for it.
        if (::chdir(target) != 0 || PivotRoot(".", ".") != 0 || ::umount2(".", MNT_DETACH) != 0 ||
            ::chdir("/") != 0) {
          return StepStatus::FromErrno(index);
        }
        break;
      case MountOpKind::kDetach:
        if (::umount2(target, MNT_DETACH) != 0) return StepStatus::FromErrno(index);
        break;
    }
  }
  return {};
}

}  // namespace moat::device::sandbox
