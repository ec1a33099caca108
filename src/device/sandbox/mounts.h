// Mounts: the sandbox's file system view, planned in the launcher and applied in the child.
//
// The child starts in a new mount namespace holding a copy of the host's mounts. It makes them
// all private (so nothing propagates back to the host), puts a small staging tmpfs over /tmp and
// pivots into it, which leaves the host tree reachable under /oldroot while it builds the app's
// root on a fresh tmpfs at /newroot:
//
//   /<entry>        each top-level entry of the app image, bound read-only, nosuid, nodev
//   <runtime bind>  host path at the same path, read-only, nosuid, nodev
//   /proc           a new procfs for the sandbox's PID namespace; /proc/sys read-only
//   /tmp            private tmpfs of the spec's size, owned by the app, nosuid, nodev, noexec
//   /dev            tmpfs, read-only once populated, with null, zero, urandom, the spec's device
//                   nodes (bound from the host) and the fd/stdin/stdout/stderr symlinks
//   /mnt/storage    the app's storage image, loop-mounted read-write, nosuid, nodev, noexec
//
// Then it detaches /oldroot, pivots into /newroot, detaches the staging root and makes "/"
// read-only. SECURITY: afterwards the only writable places are /tmp and /mnt/storage, and no
// host path is reachable except the ones listed above.
//
// The plan is a list of MountOps built entirely in the launcher (strings, flags, order), so the
// child-side ApplyMountPlan only walks it, making syscalls: no allocation.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "device/sandbox/child_step.h"
#include "device/sandbox/sandbox_spec.h"

namespace moat::device::sandbox {

enum class MountOpKind {
  kMakePrivate,  // mount --make-rprivate target
  kMountFs,      // mount(source, target, fstype, flags, data)
  kBind,         // bind source on target, then remount the bind with flags
  kRemountBind,  // remount the mount at target with flags (MS_BIND | MS_REMOUNT)
  kMkdir,        // mkdir target (mode); an existing directory is fine
  kMkfile,       // create an empty file at target, as a mount point for a file bind
  kSymlink,      // symlink: target -> source
  kLoopMount,    // attach the image `source` to a free loop device and mount it on target
  kPivotRoot,    // pivot_root(source, target) and chdir("/")
  kPivotInto,    // chdir(target), pivot_root(".", "."), detach the old root, chdir("/")
  kDetach,       // umount2(target, MNT_DETACH)
};

struct MountOp {
  MountOpKind kind;
  std::string source;
  std::string target;
  std::string fstype;
  unsigned long flags = 0;
  std::string data;
  mode_t mode = 0755;
  // For error messages and Describe(): the operation and what it is applied to, in host and
  // sandbox terms ("bind-mount", "/usr/lib/libc.so.6 -> /usr/lib/libc.so.6").
  std::string what;
  std::string subject;
};

struct MountPlan {
  std::vector<MountOp> ops;

  // One line per op, for debugging and tests.
  std::string Describe() const;
};

// Launcher side. Plans the mounts for `spec`, checking the host side: the image is a directory
// whose top-level entries are directories, files or symlinks; runtime binds exist and do not
// collide with image entries; devices are character or block devices; the storage image is a
// regular file. Errors name the offending path (kNotFound, kInvalidArgument).
Result<MountPlan> BuildMountPlan(const SandboxSpec& spec);

// Child-side. Applies the plan in order; on failure returns the errno and the index of the op.
StepStatus ApplyMountPlan(const MountPlan& plan);

}  // namespace moat::device::sandbox
