// Mutable storage: a per-app ext4 image whose size is the app's quota.
//
// Why an image: the requirement is persistent storage with SizeKB enforced by the kernel, not by
// trusting the app. A loop-mounted filesystem image is persistent, its size is a hard quota that
// works on any host filesystem (project quotas need the host's ext4/XFS to be formatted for them,
// a size-limited tmpfs is not persistent), it keeps one app's files physically apart from
// another's, and the loop device is set to auto-clear so it disappears with the sandbox's mount
// namespace. The cost is a small fixed overhead (superblock, bitmaps, inode table: about 20 KiB),
// which counts against the quota: an app with SizeKB = 64 can store about 40 KiB of data.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>

#include "core/error.h"
#include "device/sandbox/child_step.h"

namespace moat::device::sandbox {

struct StorageImageOptions {
  uid_t owner_uid = 0;  // owner of the filesystem's root directory (the app)
  gid_t owner_gid = 0;
  // mke2fs from e2fsprogs; the first of these that exists is used.
  std::filesystem::path mke2fs;  // empty: /usr/sbin/mke2fs, /sbin/mke2fs
};

// Launcher/installer side. Creates `image` (which must not exist) as an ext4 filesystem of exactly
// `size_kb` KiB (64 <= size_kb <= 16 GiB) whose root directory is owned by the app, mode 0700.
// Small images have no journal (mke2fs cannot fit one under a few MiB); images of 16 MiB and more
// get one. On failure no file is left behind. Errors: kAlreadyExists, kInvalidArgument, kIo
// (naming mke2fs and its message).
Result<void> CreateStorageImage(const std::filesystem::path& image, uint64_t size_kb,
                                const StorageImageOptions& options);

// Launcher side. Checks that `image` is a regular file of exactly `size_kb` KiB.
Result<void> CheckStorageImage(const std::filesystem::path& image, uint64_t size_kb);

// Child-side. Opens `image` read-write, attaches it to a free loop device (found through
// `loop_control`, e.g. "/oldroot/dev/loop-control"; devices are `loop_prefix`N) with
// LO_FLAGS_AUTOCLEAR, and mounts it on `target` as ext4 with `flags`.
StepStatus LoopMountImage(const char* image, const char* loop_control, const char* loop_prefix,
                          const char* target, unsigned long flags);

}  // namespace moat::device::sandbox
