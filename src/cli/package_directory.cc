#include "cli/package_directory.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

#include "core/file.h"

namespace moat::cli {
namespace {

constexpr size_t kMaxManifestBytes = 64 * 1024;
constexpr uint64_t kMaxTotalBytes = 512ull << 20;  // matches the image package limit

}  // namespace

Result<PackageDirectory> ReadPackageDirectory(const std::filesystem::path& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return Fail(ErrnoError("stat", dir, errno));
  if (!S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kInvalidArgument, "{} is not a directory", dir.string());
  }
  PackageDirectory out;
  MOAT_ASSIGN_OR_RETURN(out.manifest_json, ReadFile(dir / "app_manifest.json", kMaxManifestBytes));

  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(dir, std::filesystem::directory_options::none,
                                                   ec);
  if (ec) return Fail(ErrorCode::kIo, "cannot read {}: {}", dir.string(), ec.message());
  for (; it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return Fail(ErrorCode::kIo, "cannot read {}: {}", dir.string(), ec.message());
    const std::filesystem::path& p = it->path();
    std::string rel = std::filesystem::relative(p, dir, ec).generic_string();
    if (ec) return Fail(ErrorCode::kIo, "{}: {}", p.string(), ec.message());
    if (rel == "app_manifest.json") continue;
    if (::lstat(p.c_str(), &st) != 0) return Fail(ErrnoError("stat", p, errno));
    if ((st.st_mode & (S_ISUID | S_ISGID)) != 0) {
      return Fail(ErrorCode::kInvalidArgument,
                  "{}: setuid/setgid files cannot be packaged (apps never gain privileges)",
                  p.string());
    }
    formats::FileTreeEntry e;
    e.path = rel;
    e.mode = st.st_mode & 0777;
    if (S_ISDIR(st.st_mode)) {
      e.kind = formats::FileTreeEntry::Kind::kDirectory;
    } else if (S_ISREG(st.st_mode)) {
      e.kind = formats::FileTreeEntry::Kind::kFile;
      if (out.total_bytes + static_cast<uint64_t>(st.st_size) > kMaxTotalBytes) {
        return Fail(ErrorCode::kLimitExceeded, "{}: the package would exceed {} MiB", dir.string(),
                    kMaxTotalBytes >> 20);
      }
      MOAT_ASSIGN_OR_RETURN(e.data, ReadFileBytes(p, kMaxTotalBytes));
      out.total_bytes += e.data.size();
    } else if (S_ISLNK(st.st_mode)) {
      e.kind = formats::FileTreeEntry::Kind::kSymlink;
      char target[PATH_MAX];
      ssize_t n = ::readlink(p.c_str(), target, sizeof target - 1);
      if (n < 0) return Fail(ErrnoError("readlink", p, errno));
      e.link_target.assign(target, static_cast<size_t>(n));
      e.mode = 0777;
    } else {
      return Fail(ErrorCode::kInvalidArgument,
                  "{}: only regular files, directories and symlinks can be packaged", p.string());
    }
    out.files.push_back(std::move(e));
  }
  // Lexicographic order puts every directory before its contents.
  std::sort(out.files.begin(), out.files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  return out;
}

}  // namespace moat::cli
