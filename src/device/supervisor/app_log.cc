#include "device/supervisor/app_log.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <span>

#include "core/file.h"

namespace moat::device::supervisor {

Result<void> AppLog::Open() {
  // 0640: the logs may hold what the app prints about its users; not world-readable.
  MOAT_ASSIGN_OR_RETURN(fd_, OpenFile(path_, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0640));
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return Fail(ErrnoError("fstat", path_, errno));
  size_ = static_cast<uint64_t>(st.st_size);
  return Ok();
}

Result<void> AppLog::Rotate() {
  fd_.Reset();
  std::filesystem::path old = path_;
  old += ".1";
  if (::rename(path_.c_str(), old.c_str()) != 0 && errno != ENOENT) {
    return Fail(ErrnoError("rename", path_, errno));
  }
  return Open();
}

Result<void> AppLog::Append(std::string_view data) {
  if (path_.empty()) return Ok();
  if (!fd_) MOAT_TRY(Open());
  while (!data.empty()) {
    if (size_ >= max_bytes_) MOAT_TRY(Rotate());
    size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), max_bytes_ - size_));
    auto bytes = std::span(reinterpret_cast<const uint8_t*>(data.data()), n);
    MOAT_TRY(WriteAll(fd_.get(), bytes, path_.string()));
    size_ += n;
    data.remove_prefix(n);
  }
  return Ok();
}

}  // namespace moat::device::supervisor
