#include "device/sandbox/storage.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/unique_fd.h"

namespace moat::device::sandbox {
namespace {

constexpr uint64_t kMinSizeKb = 64;
constexpr uint64_t kMaxSizeKb = 16ull << 20;
constexpr uint64_t kJournalFromKb = 16 * 1024;

Result<std::filesystem::path> FindMke2fs(const StorageImageOptions& options) {
  if (!options.mke2fs.empty()) return options.mke2fs;
  for (const char* p : {"/usr/sbin/mke2fs", "/sbin/mke2fs"}) {
    if (::access(p, X_OK) == 0) return std::filesystem::path(p);
  }
  return Fail(ErrorCode::kNotFound, "mke2fs not found in /usr/sbin or /sbin (install e2fsprogs)");
}

// Runs argv[0] with an empty environment, collecting at most 4 KiB of its output for errors.
Result<void> RunTool(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Fail(ErrnoError("pipe2", argv[0], errno));
  UniqueFd read_end(pipefd[0]);
  UniqueFd write_end(pipefd[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, cargv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Fail(ErrnoError("posix_spawn", argv[0], rc));
  write_end.Reset();
  std::string output;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < 4096) output.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Fail(ErrnoError("waitpid", argv[0], errno));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
    return Fail(ErrorCode::kIo, "{} failed (status {:#x}): {}", argv[0], status, output);
  }
  return Ok();
}

// Writes the decimal digits of `n` after `prefix` into `out` (size `cap`); false if too small.
bool FormatPath(char* out, size_t cap, const char* prefix, unsigned n) {
  size_t len = std::strlen(prefix);
  char digits[12];
  size_t nd = 0;
  do {
    digits[nd++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  if (len + nd + 1 > cap) return false;
  std::memcpy(out, prefix, len);
  for (size_t i = 0; i < nd; ++i) out[len + i] = digits[nd - 1 - i];
  out[len + nd] = '\0';
  return true;
}

}  // namespace

Result<void> CreateStorageImage(const std::filesystem::path& image, uint64_t size_kb,
                                const StorageImageOptions& options) {
  if (size_kb < kMinSizeKb || size_kb > kMaxSizeKb) {
    return Fail(ErrorCode::kInvalidArgument, "storage image {}: size {} KiB is out of range {}..{}",
                image.string(), size_kb, kMinSizeKb, kMaxSizeKb);
  }
  MOAT_ASSIGN_OR_RETURN(auto mke2fs, FindMke2fs(options));
  {
    MOAT_ASSIGN_OR_RETURN(UniqueFd fd,
                          OpenFile(image, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
    if (::ftruncate(fd.get(), static_cast<off_t>(size_kb * 1024)) != 0) {
      int err = errno;
      ::unlink(image.c_str());
      return Fail(ErrnoError("ftruncate", image, err));
    }
  }
  // 1 KiB blocks and a small inode table (128-byte inodes, one per 2 KiB of quota, at least 32)
  // keep the fixed overhead low for Azure-Sphere-sized quotas; no reserved blocks, no resize
  // inode; a journal only where it fits comfortably.
  uint64_t inodes = std::max<uint64_t>(32, size_kb / 2);
  std::string features = size_kb >= kJournalFromKb ? "^resize_inode" : "^has_journal,^resize_inode";
  std::vector<std::string> argv = {
      mke2fs.string(),
      "-q",
      "-F",
      "-t",
      "ext4",
      "-b",
      "1024",
      "-I",
      "128",
      "-N",
      std::to_string(inodes),
      "-m",
      "0",
      "-O",
      features,
      "-E",
      fmt::format("root_owner={}:{}", options.owner_uid, options.owner_gid),
      "-L",
      "moat-storage",
      image.string(),
      fmt::format("{}", size_kb)};
  if (auto r = RunTool(argv); !r) {
    ::unlink(image.c_str());
    return Fail(r.error().WithContext(fmt::format("storage image {}", image.string())));
  }
  return Ok();
}

Result<void> CheckStorageImage(const std::filesystem::path& image, uint64_t size_kb) {
  struct stat st {};
  if (::lstat(image.c_str(), &st) != 0) return Fail(ErrnoError("stat storage image", image, errno));
  if (!S_ISREG(st.st_mode)) {
    return Fail(ErrorCode::kInvalidArgument, "storage image {} is not a regular file",
                image.string());
  }
  if (static_cast<uint64_t>(st.st_size) != size_kb * 1024) {
    return Fail(ErrorCode::kInvalidArgument,
                "storage image {} is {} bytes, but the spec's quota is {} KiB (resizing is not "
                "supported)",
                image.string(), st.st_size, size_kb);
  }
  return Ok();
}

StepStatus LoopMountImage(const char* image, const char* loop_control, const char* loop_prefix,
                          const char* target, unsigned long flags) {
  int image_fd = ::open(image, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (image_fd < 0) return StepStatus::FromErrno();
  int control = ::open(loop_control, O_RDWR | O_CLOEXEC);
  if (control < 0) {
    StepStatus s = StepStatus::FromErrno();
    ::close(image_fd);
    return s;
  }
  StepStatus status = StepStatus::Error(EBUSY);
  // Another process may take the free device between GET_FREE and CONFIGURE; then try again.
  for (int attempt = 0; attempt < 32; ++attempt) {
    int n = ::ioctl(control, LOOP_CTL_GET_FREE);
    if (n < 0) {
      status = StepStatus::FromErrno();
      break;
    }
    char device[64];
    if (!FormatPath(device, sizeof device, loop_prefix, static_cast<unsigned>(n))) {
      status = StepStatus::Error(ENAMETOOLONG);
      break;
    }
    int loop = ::open(device, O_RDWR | O_CLOEXEC);
    if (loop < 0) {
      status = StepStatus::FromErrno();
      break;
    }
    struct loop_config config;
    std::memset(&config, 0, sizeof config);
    config.fd = static_cast<uint32_t>(image_fd);
    // SECURITY: auto-clear detaches the device when the sandbox's mount namespace (the last
    // user) goes away, so no loop device outlives the app.
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    if (::ioctl(loop, LOOP_CONFIGURE, &config) != 0) {
      status = StepStatus::FromErrno();
      ::close(loop);
      if (status.err == EBUSY) continue;
      break;
    }
    if (::mount(device, target, "ext4", flags, nullptr) != 0) {
      status = StepStatus::FromErrno();
    } else {
      status = {};
    }
    ::close(loop);  // the mount holds the device now (or, on failure, auto-clear releases it)
    break;
  }
  ::close(control);
  ::close(image_fd);
  return status;
}

}  // namespace moat::device::sandbox
