#include "device/update/app_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <system_error>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/unique_fd.h"
#include "crypto/digest.h"
#include "device/update/crash_point.h"
#include "formats/json_reader.h"

namespace moat::device::update {
namespace fs = std::filesystem;
using formats::FileTreeEntry;

namespace {

constexpr std::string_view kCurrent = "current";
constexpr std::string_view kPrevious = "previous";
constexpr std::string_view kStagingPrefix = ".staging-";
constexpr size_t kMaxImageJsonBytes = 256 << 10;

bool IsImageId(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

Result<std::optional<std::string>> ReadLink(const fs::path& link) {
  std::error_code ec;
  fs::path target = fs::read_symlink(link, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return std::optional<std::string>();
    return Fail(ErrnoError("readlink", link, ec.value()));
  }
  return std::optional<std::string>(target.string());
}

// Points `dir`/`name` at `target` atomically: a new symlink renamed over the old one.
Result<void> SwitchLink(const fs::path& dir, std::string_view name, const std::string& target) {
  const fs::path tmp = dir / fmt::format(".{}.tmp", name);
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) return Fail(ErrnoError("unlink", tmp, errno));
  if (::symlink(target.c_str(), tmp.c_str()) != 0) return Fail(ErrnoError("symlink", tmp, errno));
  const fs::path final_path = dir / name;
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    return Fail(ErrnoError("rename", final_path, errno));
  }
  return SyncDirectory(dir);
}

Result<void> RemoveLink(const fs::path& dir, std::string_view name) {
  const fs::path path = dir / name;
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Fail(ErrnoError("unlink", path, errno));
  }
  return SyncDirectory(dir);
}

Result<void> RemoveTree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return Fail(ErrorCode::kInternal, "removing {}: {}", path.string(), ec.message());
  return Ok();
}

Json ImageJson(const InstalledImage& image) {
  return {{"component_id", image.component_id.ToString()},
          {"image_id", image.image_id},
          {"package_image_id", image.package_image_id.ToString()},
          {"name", image.name},
          {"version", image.version},
          {"manifest", image.manifest_json},
          {"installed_at", FormatRfc3339(image.installed_at)}};
}

Result<InstalledImage> LoadImage(const fs::path& component_dir, const std::string& image_id) {
  const fs::path image_dir = component_dir / image_id;
  MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(image_dir / "image.json", kMaxImageJsonBytes));
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(text, (image_dir / "image.json").string()));
  formats::ObjectReader r(j, "image.json");
  MOAT_TRY(r.status());
  InstalledImage image;
  MOAT_ASSIGN_OR_RETURN(std::string component, r.RequiredString("component_id", 64));
  MOAT_ASSIGN_OR_RETURN(image.component_id, formats::Guid::Parse(component));
  MOAT_ASSIGN_OR_RETURN(image.image_id, r.RequiredString("image_id", 64));
  MOAT_ASSIGN_OR_RETURN(std::string package_id, r.RequiredString("package_image_id", 64));
  MOAT_ASSIGN_OR_RETURN(image.package_image_id, formats::Guid::Parse(package_id));
  MOAT_ASSIGN_OR_RETURN(image.name, r.RequiredString("name", 256));
  MOAT_ASSIGN_OR_RETURN(image.version, r.RequiredString("version", 64));
  MOAT_ASSIGN_OR_RETURN(image.manifest_json, r.OptionalString("manifest", kMaxImageJsonBytes));
  MOAT_ASSIGN_OR_RETURN(std::string at, r.RequiredString("installed_at", 64));
  auto installed_at = ParseRfc3339(at);
  if (!installed_at) return Fail(ErrorCode::kInvalidArgument, "image.json: bad installed_at");
  image.installed_at = *installed_at;
  MOAT_TRY(r.NoOtherFields());
  if (image.image_id != image_id) {
    return Fail(ErrorCode::kInvalidArgument, "{}: image.json names image {}", image_dir.string(),
                image.image_id);
  }
  image.root = image_dir / "root";
  return image;
}

}  // namespace

Result<void> WriteFileTree(const fs::path& dir, std::span<const FileTreeEntry> entries) {
  std::set<std::string> dirs;  // directory entries written so far
  std::vector<fs::path> dirs_to_sync{dir};
  for (const FileTreeEntry& e : entries) {
    const size_t slash = e.path.rfind('/');
    if (slash != std::string::npos && !dirs.contains(e.path.substr(0, slash))) {
      // SECURITY: never write through a symlink (or into a file) the tree itself created.
      return Fail(ErrorCode::kInvalidArgument, "file tree: '{}' has no parent directory entry",
                  e.path);
    }
    const fs::path path = dir / e.path;
    switch (e.kind) {
      case FileTreeEntry::Kind::kDirectory:
        if (::mkdir(path.c_str(), 0700) != 0) return Fail(ErrnoError("mkdir", path, errno));
        if (::chmod(path.c_str(), e.mode) != 0) return Fail(ErrnoError("chmod", path, errno));
        dirs.insert(e.path);
        dirs_to_sync.push_back(path);
        break;
      case FileTreeEntry::Kind::kFile: {
        MOAT_ASSIGN_OR_RETURN(
            UniqueFd fd,
            OpenFile(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        MOAT_TRY(WriteAll(fd.get(), e.data, path.string()));
        if (::fchmod(fd.get(), e.mode) != 0) return Fail(ErrnoError("fchmod", path, errno));
        if (::fsync(fd.get()) != 0) return Fail(ErrnoError("fsync", path, errno));
        break;
      }
      case FileTreeEntry::Kind::kSymlink:
        if (::symlink(e.link_target.c_str(), path.c_str()) != 0) {
          return Fail(ErrnoError("symlink", path, errno));
        }
        break;
    }
  }
  CrashPoint("install-unpacked");
  for (auto it = dirs_to_sync.rbegin(); it != dirs_to_sync.rend(); ++it) {
    MOAT_TRY(SyncDirectory(*it));
  }
  return Ok();
}

Result<AppStore> AppStore::Open(fs::path dir, const Clock& clock,
                                formats::ImagePackageLimits limits) {
  MOAT_TRY(MakeDirectories(dir, 0755));
  AppStore store(std::move(dir), clock, limits);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(store.dir_, ec)) {
    if (!entry.is_directory() || entry.is_symlink()) continue;
    if (!formats::Guid::Parse(entry.path().filename().string())) continue;
    MOAT_TRY(store.Recover(entry.path()));
  }
  if (ec) return Fail(ErrorCode::kInternal, "listing {}: {}", store.dir_.string(), ec.message());
  return store;
}

// Brings a component directory back to a consistent state after a crash.
Result<void> AppStore::Recover(const fs::path& component_dir) {
  MOAT_ASSIGN_OR_RETURN(auto current, ReadLink(component_dir / kCurrent));
  MOAT_ASSIGN_OR_RETURN(auto previous, ReadLink(component_dir / kPrevious));
  // A `current` naming an image that does not load cannot come from our own ordering; fall back
  // to `previous` rather than leave the app with nothing.
  if (current && !LoadImage(component_dir, *current)) {
    log::Warn("{}: current image {} is unusable", component_dir.string(), *current);
    if (previous && LoadImage(component_dir, *previous)) {
      MOAT_TRY(SwitchLink(component_dir, kCurrent, *previous));
      current = previous;
      MOAT_TRY(RemoveLink(component_dir, kPrevious));
      previous.reset();
    }
  }
  if (previous && (!LoadImage(component_dir, *previous) || previous == current)) {
    MOAT_TRY(RemoveLink(component_dir, kPrevious));
    previous.reset();
  }
  std::error_code ec;
  std::vector<fs::path> garbage;
  for (const auto& entry : fs::directory_iterator(component_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == kCurrent || name == kPrevious) continue;
    if (name == current || name == previous) continue;
    garbage.push_back(entry.path());  // staging dirs, temporary links, unreferenced images
  }
  if (ec) return Fail(ErrorCode::kInternal, "listing {}: {}", component_dir.string(), ec.message());
  for (const auto& path : garbage) {
    log::Info("removing leftover {}", path.string());
    MOAT_TRY(RemoveTree(path));
  }
  if (!garbage.empty()) MOAT_TRY(SyncDirectory(component_dir));
  if (!current && !previous) {
    // Nothing was ever switched in: an interrupted first install.
    MOAT_TRY(RemoveTree(component_dir));
    MOAT_TRY(SyncDirectory(dir_));
  }
  return Ok();
}

Result<InstalledApp> AppStore::Install(std::span<const uint8_t> package,
                                       std::span<const crypto::PublicKey> trusted_keys,
                                       const InstallExpectation& expect) {
  // SECURITY: the signature first; nothing from the package is looked at before it verifies.
  MOAT_ASSIGN_OR_RETURN(formats::VerifiedImagePackage verified,
                        formats::VerifyImagePackage(package, trusted_keys, limits_));
  const formats::ImagePackageHeader& header = verified.header();
  const std::string what = fmt::format("image '{}' {}", header.name, header.version);
  if (header.image_type != formats::ImageType::kApplication) {
    return Fail(ErrorCode::kInvalidArgument, "{}: is an {} image, not an app", what,
                formats::ImageTypeName(header.image_type));
  }
  if (header.component_id != expect.component_id) {
    return Fail(ErrorCode::kInvalidArgument,
                "{}: package is for component {}, the update metadata says {}", what,
                header.component_id.ToString(), expect.component_id.ToString());
  }
  if (expect.version && *expect.version != header.version) {
    return Fail(ErrorCode::kInvalidArgument,
                "{}: package version differs from the update metadata's {}", what, *expect.version);
  }
  MOAT_ASSIGN_OR_RETURN(formats::AppManifest manifest,
                        formats::ParseAppManifest(verified.manifest_json()));
  if (manifest.component_id != header.component_id) {
    return Fail(ErrorCode::kInvalidArgument, "{}: manifest names component {}", what,
                manifest.component_id.ToString());
  }
  MOAT_ASSIGN_OR_RETURN(std::vector<FileTreeEntry> files, verified.Files(limits_.tree));

  const std::string image_id = HexEncode(crypto::Sha256(package));
  const fs::path component_dir = dir_ / header.component_id.ToString();
  MOAT_TRY(MakeDirectories(component_dir, 0755));
  MOAT_ASSIGN_OR_RETURN(auto old_current, ReadLink(component_dir / kCurrent));
  if (old_current == image_id) {
    return Fail(ErrorCode::kAlreadyExists, "{}: image {} is already installed", what, image_id);
  }

  // 1. Stage.
  const fs::path staging = component_dir / fmt::format("{}{}", kStagingPrefix, image_id);
  MOAT_TRY(RemoveTree(staging));
  if (::mkdir(staging.c_str(), 0755) != 0) return Fail(ErrnoError("mkdir", staging, errno));
  if (::chmod(staging.c_str(), 0755) != 0) return Fail(ErrnoError("chmod", staging, errno));
  const fs::path root = staging / "root";
  if (::mkdir(root.c_str(), 0755) != 0) return Fail(ErrnoError("mkdir", root, errno));
  if (::chmod(root.c_str(), 0755) != 0) return Fail(ErrnoError("chmod", root, errno));
  InstalledImage image{.component_id = header.component_id,
                       .image_id = image_id,
                       .package_image_id = header.image_id,
                       .name = header.name,
                       .version = header.version,
                       .manifest_json = std::string(verified.manifest_json()),
                       .installed_at = clock_->Now(),
                       .root = component_dir / image_id / "root"};
  auto staged = [&]() -> Result<void> {
    MOAT_TRY(WriteFileTree(root, files));
    MOAT_TRY(AtomicWriteFile(staging / "image.json", DumpJson(ImageJson(image)), {.mode = 0644}));
    return SyncDirectory(staging);
  }();
  if (!staged) {
    (void)RemoveTree(staging);
    return Fail(staged.error().WithContext(what));
  }
  files.clear();
  CrashPoint("install-synced");

  // 2. Into place.
  const fs::path final_dir = component_dir / image_id;
  MOAT_TRY(RemoveTree(final_dir));  // a leftover from an earlier attempt (never current)
  if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
    return Fail(ErrnoError("rename", final_dir, errno));
  }
  MOAT_TRY(SyncDirectory(component_dir));
  CrashPoint("install-renamed");

  // 3. Switch: previous first (so `current` is never without its fallback), then current.
  if (old_current) {
    MOAT_TRY(SwitchLink(component_dir, kPrevious, *old_current));
  }
  CrashPoint("install-previous-switched");
  MOAT_TRY(SwitchLink(component_dir, kCurrent, image_id));
  CrashPoint("install-current-switched");

  // 4. Anything older than previous goes.
  MOAT_TRY(Recover(component_dir));
  CrashPoint("install-cleaned");
  MOAT_ASSIGN_OR_RETURN(auto app, Get(header.component_id));
  if (!app) return Fail(ErrorCode::kInternal, "{}: not installed after the switch", what);
  log::Info("installed {} ({}) as image {}", what, header.component_id.ToString(), image_id);
  return std::move(*app);
}

Result<InstalledImage> AppStore::Rollback(const formats::Guid& component) {
  const fs::path component_dir = dir_ / component.ToString();
  MOAT_ASSIGN_OR_RETURN(auto app, Get(component));
  if (!app || !app->previous) {
    return Fail(ErrorCode::kFailedPrecondition, "app {}: no previous version to roll back to",
                component.ToString());
  }
  MOAT_TRY(SwitchLink(component_dir, kCurrent, app->previous->image_id));
  CrashPoint("rollback-current-switched");
  MOAT_TRY(RemoveLink(component_dir, kPrevious));
  MOAT_TRY(Recover(component_dir));  // removes the abandoned image
  CrashPoint("rollback-cleaned");
  log::Warn("rolled back app '{}' ({}) from {} to {}", app->current.name, component.ToString(),
            app->current.version, app->previous->version);
  return app->current;
}

Result<std::optional<InstalledApp>> AppStore::Get(const formats::Guid& component) const {
  const fs::path component_dir = dir_ / component.ToString();
  MOAT_ASSIGN_OR_RETURN(auto current, ReadLink(component_dir / kCurrent));
  if (!current || !IsImageId(*current)) return std::optional<InstalledApp>();
  MOAT_ASSIGN_OR_RETURN(InstalledImage image, LoadImage(component_dir, *current));
  InstalledApp app{.current = std::move(image)};
  MOAT_ASSIGN_OR_RETURN(auto previous, ReadLink(component_dir / kPrevious));
  if (previous && IsImageId(*previous)) {
    auto p = LoadImage(component_dir, *previous);
    if (p) app.previous = std::move(*p);
  }
  return std::optional<InstalledApp>(std::move(app));
}

Result<std::vector<InstalledApp>> AppStore::List() const {
  std::vector<formats::Guid> components;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (!entry.is_directory() || entry.is_symlink()) continue;
    auto id = formats::Guid::Parse(entry.path().filename().string());
    if (id) components.push_back(*id);
  }
  if (ec) return Fail(ErrorCode::kInternal, "listing {}: {}", dir_.string(), ec.message());
  std::sort(components.begin(), components.end());
  std::vector<InstalledApp> out;
  for (const auto& c : components) {
    auto app = Get(c);
    if (!app) {
      log::Warn("installed app {}: {}", c.ToString(), app.error().message());
      continue;
    }
    if (*app) out.push_back(std::move(**app));
  }
  return out;
}

}  // namespace moat::device::update
