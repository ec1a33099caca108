// A size-capped log file for one of an app's output streams.
//
// The supervisor reads the app's stdout and stderr from pipes and appends them here, so an app
// cannot fill the device's disk with output. When a write would take the file past `max_bytes`,
// the file is rotated: renamed to "<path>.1" (replacing the previous one) and started afresh. At
// most 2 * max_bytes per stream are on disk, and the newest output is always kept. (Truncating
// instead would lose the lines just before a crash, which are the ones worth reading.)
//
// Errors (kIo) name the file; the caller logs them and carries on: a full disk must not stop an
// app. Thread-compatible.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/unique_fd.h"

namespace moat::device::supervisor {

class AppLog {
 public:
  // An empty path discards everything.
  AppLog(std::filesystem::path path, uint64_t max_bytes)
      : path_(std::move(path)), max_bytes_(max_bytes) {}

  // Appends `data`, rotating as needed (a chunk larger than the cap is split across files).
  Result<void> Append(std::string_view data);

  const std::filesystem::path& path() const { return path_; }

 private:
  Result<void> Open();
  Result<void> Rotate();

  std::filesystem::path path_;
  uint64_t max_bytes_;
  UniqueFd fd_;
  uint64_t size_ = 0;
};

// The newest `max_bytes` (at most kMaxLogTailBytes) of a log written by AppLog: the end of
// "<path>.1" followed by "<path>" (`moatctl app logs`). Missing files read as empty; errors
// (kIo) name the file.
inline constexpr size_t kMaxLogTailBytes = 4 << 20;
Result<std::string> ReadLogTail(const std::filesystem::path& path, size_t max_bytes);

}  // namespace moat::device::supervisor
