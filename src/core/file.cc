#include "core/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "core/encoding.h"
#include "core/random.h"

namespace moat {

Error ErrnoError(std::string_view what, const std::filesystem::path& path, int err) {
  ErrorCode code = ErrorCode::kIo;
  if (err == ENOENT) code = ErrorCode::kNotFound;
  if (err == EACCES || err == EPERM) code = ErrorCode::kPermissionDenied;
  if (err == EEXIST) code = ErrorCode::kAlreadyExists;
  return Error(code, fmt::format("{} {}: {}", what, path.string(), std::strerror(err)));
}

Result<UniqueFd> OpenFile(const std::filesystem::path& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Fail(ErrnoError("open", path, errno));
  return UniqueFd(fd);
}

Result<std::vector<uint8_t>> ReadAll(int fd, size_t max_bytes, std::string_view what) {
  std::vector<uint8_t> out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
      return Fail(ErrorCode::kLimitExceeded, "{}: {} bytes exceeds the limit of {} bytes", what,
                  st.st_size, max_bytes);
    }
    out.reserve(static_cast<size_t>(st.st_size));
  }
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoError("read", std::string(what), errno));
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return Fail(ErrorCode::kLimitExceeded, "{}: more than the limit of {} bytes", what,
                  max_bytes);
    }
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

Result<std::vector<uint8_t>> ReadFileBytes(const std::filesystem::path& path, size_t max_bytes) {
  MOAT_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  return ReadAll(fd.get(), max_bytes, path.string());
}

Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes) {
  MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path, max_bytes));
  return std::string(bytes.begin(), bytes.end());
}

Result<void> WriteAll(int fd, std::span<const uint8_t> data, std::string_view what) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoError("write", std::string(what), errno));
    }
    done += static_cast<size_t>(n);
  }
  return Ok();
}

Result<void> SyncDirectory(const std::filesystem::path& dir) {
  MOAT_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY));
  if (::fsync(fd.get()) != 0) return Fail(ErrnoError("fsync", dir, errno));
  return Ok();
}

Result<void> AtomicWriteFile(const std::filesystem::path& path, std::span<const uint8_t> data,
                             AtomicWriteOptions options) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  if (options.exclusive && ::access(path.c_str(), F_OK) == 0) {
    return Fail(ErrorCode::kAlreadyExists, "{} already exists; refusing to overwrite it",
                path.string());
  }
  // The temporary name is unpredictable so a hostile process in a shared directory cannot
  // pre-create it; O_EXCL makes sure we own what we write.
  uint8_t suffix[8];
  SystemRandom().Fill(suffix);
  std::filesystem::path tmp =
      dir / fmt::format(".{}.tmp-{}", path.filename().string(), HexEncode(suffix));
  MOAT_ASSIGN_OR_RETURN(UniqueFd fd,
                        OpenFile(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, options.mode));
  auto cleanup_on_error = [&](Error e) -> Result<void> {
    ::unlink(tmp.c_str());
    return Fail(std::move(e));
  };
  // The mode passed to open() is filtered by the umask; set it exactly.
  if (::fchmod(fd.get(), options.mode) != 0)
    return cleanup_on_error(ErrnoError("fchmod", tmp, errno));
  if (auto r = WriteAll(fd.get(), data, tmp.string()); !r) return cleanup_on_error(r.error());
  if (::fsync(fd.get()) != 0) return cleanup_on_error(ErrnoError("fsync", tmp, errno));
  fd.Reset();
  if (options.exclusive) {
    // link(2) fails if the target exists, so a racing writer cannot be overwritten.
    if (::link(tmp.c_str(), path.c_str()) != 0)
      return cleanup_on_error(ErrnoError("link", path, errno));
    ::unlink(tmp.c_str());
  } else if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return cleanup_on_error(ErrnoError("rename", path, errno));
  }
  return SyncDirectory(dir);
}

Result<void> AtomicWriteFile(const std::filesystem::path& path, std::string_view data,
                             AtomicWriteOptions options) {
  return AtomicWriteFile(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
      options);
}

Result<void> MakeDirectories(const std::filesystem::path& dir, mode_t mode) {
  std::error_code ec;
  std::filesystem::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (partial.empty() || std::filesystem::is_directory(partial, ec)) continue;
    if (::mkdir(partial.c_str(), mode) != 0 && errno != EEXIST) {
      return Fail(ErrnoError("mkdir", partial, errno));
    }
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return Fail(ErrorCode::kIo, "mkdir {}: exists and is not a directory", dir.string());
  }
  return Ok();
}

Result<TempDir> TempDir::Create(std::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string templ = fmt::format("{}/{}-XXXXXX", base && *base ? base : "/tmp", prefix);
  if (::mkdtemp(templ.data()) == nullptr) return Fail(ErrnoError("mkdtemp", templ, errno));
  return TempDir(templ);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);  // best effort; nothing useful to do on failure
}

}  // namespace moat
