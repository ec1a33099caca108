#include "device/supervisor/app_log.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

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

namespace {

// Appends to `out` the last `want` bytes of `path` (fewer if it is shorter); 0 if missing.
Result<size_t> AppendTail(const std::filesystem::path& path, size_t want, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return size_t{0};
    return Fail(ErrnoError("open", path, errno));
  }
  UniqueFd owner(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Fail(ErrnoError("fstat", path, errno));
  const size_t size = static_cast<size_t>(st.st_size);
  const size_t n = std::min(size, want);
  std::string buffer(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buffer.data() + got, n - got, static_cast<off_t>(size - n + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Fail(ErrnoError("pread", path, errno));
    if (r == 0) break;  // truncated meanwhile
    got += static_cast<size_t>(r);
  }
  buffer.resize(got);
  out += buffer;
  return got;
}

}  // namespace

Result<std::string> ReadLogTail(const std::filesystem::path& path, size_t max_bytes) {
  max_bytes = std::min(max_bytes, kMaxLogTailBytes);
  std::string current;
  if (path.empty()) return current;
  MOAT_ASSIGN_OR_RETURN(size_t from_current, AppendTail(path, max_bytes, current));
  std::string out;
  if (from_current < max_bytes) {
    std::filesystem::path rotated = path;
    rotated += ".1";
    MOAT_TRY(AppendTail(rotated, max_bytes - from_current, out));
  }
  out += current;
  return out;
}

}  // namespace moat::device::supervisor
