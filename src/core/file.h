// File helpers. Every write that must survive a crash or power cut goes through
// AtomicWriteFile: readers see the old contents or the new, never a mix.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/unique_fd.h"

namespace moat {

// Builds an Error from errno for the syscall `what` on `path`, e.g. "open /x: No such file".
Error ErrnoError(std::string_view what, const std::filesystem::path& path, int err);

// Opens `path` with open(2) flags (O_CLOEXEC is always added).
Result<UniqueFd> OpenFile(const std::filesystem::path& path, int flags, mode_t mode = 0);

// Reads a whole file. Fails with kLimitExceeded, naming the file, if it is larger than
// `max_bytes`: callers always state how much they are prepared to hold in memory.
Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes);
Result<std::vector<uint8_t>> ReadFileBytes(const std::filesystem::path& path, size_t max_bytes);

// Reads everything from an open descriptor, up to `max_bytes`.
Result<std::vector<uint8_t>> ReadAll(int fd, size_t max_bytes, std::string_view what);

// Writes all of `data`, retrying on short writes and EINTR.
Result<void> WriteAll(int fd, std::span<const uint8_t> data, std::string_view what);

struct AtomicWriteOptions {
  mode_t mode = 0644;
  bool exclusive = false;  // fail with kAlreadyExists if the target already exists
};

// Writes `data` to `path` atomically: a temporary file in the same directory is written,
// fsync'ed, renamed over `path`, and the directory is fsync'ed so the rename is durable.
// After a crash at any point the file holds either the old contents or the new ones.
Result<void> AtomicWriteFile(const std::filesystem::path& path, std::span<const uint8_t> data,
                             AtomicWriteOptions options = {});
Result<void> AtomicWriteFile(const std::filesystem::path& path, std::string_view data,
                             AtomicWriteOptions options = {});

// fsyncs a directory so that entries created or renamed in it are durable.
Result<void> SyncDirectory(const std::filesystem::path& dir);

// Creates a directory (and parents) with `mode`; succeeds if it already exists as a directory.
Result<void> MakeDirectories(const std::filesystem::path& dir, mode_t mode = 0755);

// A directory under $TMPDIR (or /tmp) removed with its contents on destruction. For tests and
// for staging; never for secrets that must be wiped.
class TempDir {
 public:
  static Result<TempDir> Create(std::string_view prefix = "moat");
  ~TempDir();
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

}  // namespace moat
