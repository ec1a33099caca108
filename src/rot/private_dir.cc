#include "rot/private_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"

namespace moat::rot::internal {

Result<void> CheckPrivate(const std::filesystem::path& path, bool is_dir) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return Fail(ErrnoError("stat", path, errno));
  if (is_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    return Fail(ErrorCode::kPermissionDenied, "{} is not a {}", path.string(),
                is_dir ? "directory" : "regular file");
  }
  if (st.st_uid != ::geteuid()) {
    return Fail(ErrorCode::kPermissionDenied,
                "{} is owned by uid {}, not by this process (uid {}); refusing to use it as a "
                "key store",
                path.string(), st.st_uid, ::geteuid());
  }
  if ((st.st_mode & 077) != 0) {
    return Fail(ErrorCode::kPermissionDenied,
                "{} has mode {:04o}; a key store {} must not be accessible to group or others "
                "(chmod {} it)",
                path.string(), st.st_mode & 07777, is_dir ? "directory" : "file",
                is_dir ? "0700" : "0600");
  }
  return Ok();
}


Result<void> OpenPrivateDir(const std::filesystem::path& dir,
                            std::initializer_list<std::string_view> extensions) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Fail(ErrnoError("mkdir", dir, errno));
  }
  MOAT_TRY(CheckPrivate(dir, /*is_dir=*/true));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    for (std::string_view ext : extensions) {
      if (entry.path().extension() == ext) MOAT_TRY(CheckPrivate(entry.path(), false));
    }
  }
  if (ec) return Fail(ErrorCode::kIo, "cannot list {}: {}", dir.string(), ec.message());
  return Ok();
}

}  // namespace moat::rot::internal
