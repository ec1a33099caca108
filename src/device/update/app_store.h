// The apps installed on a device, on disk under the state directory, installed atomically.
//
// Layout (docs/moatd.md, "Installed apps"):
//   apps/<component-id>/<image-id>/root/        the unpacked file tree (the app's read-only root)
//   apps/<component-id>/<image-id>/image.json   what was installed: header fields, manifest, time
//   apps/<component-id>/current  -> <image-id>  symlink: the version that runs
//   apps/<component-id>/previous -> <image-id>  symlink: the version before it (for rollback)
//   apps/<component-id>/.staging-<image-id>/    an install in progress (deleted by Open)
// <image-id> is the service's image ID: lowercase hex SHA-256 of the package file.
//
// Install: verify the package signature against the trusted image-signing keys BEFORE anything
// is unpacked, check the header against what the caller expects, parse the manifest and the
// tree, write the tree into a staging directory, fsync every file and directory, rename the
// staging directory into place, then switch `previous` and `current` by renaming a new symlink
// over the old one (rename(2) is atomic), fsyncing the component directory after each step.
// A power cut at any point leaves `current` naming either the old image or the new one, each
// complete and synced; Open() removes what a cut left half-done (staging directories, temporary
// links, image directories no link names).
//
// Rollback: `current` is switched back to `previous`; then `previous` and the abandoned image are
// removed (so a rollback cannot be rolled back).
//
// Each step boundary calls CrashPoint (crash_point.h) so tests can kill -9 there.
//
// Thread-safety: none; the update agent serialises access. One process owns the directory.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "crypto/key.h"
#include "formats/app_manifest.h"
#include "formats/guid.h"
#include "formats/image_package.h"

namespace moat::device::update {

struct InstalledImage {
  formats::Guid component_id;
  std::string image_id;  // sha256 hex of the package file
  formats::Guid package_image_id;
  std::string name;
  std::string version;
  std::string manifest_json;
  SystemTime installed_at;
  std::filesystem::path root;  // .../<image-id>/root
};

struct InstalledApp {
  InstalledImage current;
  std::optional<InstalledImage> previous;
};

// What the caller expects the package to be (from verified TUF targets metadata).
struct InstallExpectation {
  formats::Guid component_id;
  std::optional<std::string> version;  // when given, must equal the header's version
};

class AppStore {
 public:
  // Creates `dir` (0755: app roots must be reachable by the sandbox) and cleans up after an
  // interrupted install or rollback.
  static Result<AppStore> Open(std::filesystem::path dir, const Clock& clock,
                               formats::ImagePackageLimits limits = {});

  // Installs `package` as the new current version of its component (see the file comment).
  // Errors: the signature errors of VerifyImagePackage (kVerificationFailed), kInvalidArgument
  // for a package that is not an app, whose component ID or version differs from `expect`,
  // whose manifest does not parse or names another component, kAlreadyExists when this exact
  // image is already current. Nothing is changed on error.
  Result<InstalledApp> Install(std::span<const uint8_t> package,
                               std::span<const crypto::PublicKey> trusted_keys,
                               const InstallExpectation& expect);

  // Switches `component` back to its previous image. kFailedPrecondition when there is none.
  // Returns the image that was abandoned.
  Result<InstalledImage> Rollback(const formats::Guid& component);

  // Every installed app, by component ID order. Components whose `current` is missing or broken
  // are skipped (and logged).
  Result<std::vector<InstalledApp>> List() const;
  Result<std::optional<InstalledApp>> Get(const formats::Guid& component) const;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  AppStore(std::filesystem::path dir, const Clock& clock, formats::ImagePackageLimits limits)
      : dir_(std::move(dir)), clock_(&clock), limits_(limits) {}
  Result<void> Recover(const std::filesystem::path& component_dir);

  std::filesystem::path dir_;
  const Clock* clock_;
  formats::ImagePackageLimits limits_;
};

// Writes `entries` (a parsed, validated file tree, in canonical order) under `dir`, which must
// exist and be empty. Every entry's parent must be a directory entry of the tree, so nothing is
// ever written through a symlink. Files are fsync'ed; directories are fsync'ed last to first.
Result<void> WriteFileTree(const std::filesystem::path& dir,
                           std::span<const formats::FileTreeEntry> entries);

}  // namespace moat::device::update
