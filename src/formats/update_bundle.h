// The offline update bundle: one file holding a device group's TUF repository files (metadata
// and target files) so that `moatctl update apply BUNDLE` can install an update without the
// network, with exactly the checks of an online update. Byte layout: docs/formats/update-bundle.md.
//
// The container itself is NOT trusted and carries no signature of its own: every file in it is
// verified by the TUF client exactly as if it had been downloaded (the bundle's root files must
// chain from the device's trusted root, targets must match verified metadata). Parsing only
// bounds and splits the bytes.
//
// Pure code: no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat::formats {

inline constexpr std::string_view kUpdateBundleMagic = "MOATUPD1";

struct UpdateBundleLimits {
  size_t max_entries = 10'000;
  size_t max_group_id_bytes = 128;
  size_t max_path_bytes = 512;
};

// A parsed bundle. `files` maps a repository path ("1.root.json", "timestamp.json",
// "3.snapshot.json", "3.targets.json", "targets/<sha256 hex>.<name>") to its bytes, which are
// views into the buffer given to ParseUpdateBundle (it must outlive this object).
struct UpdateBundleView {
  std::string group_id;  // the device group whose repository this is
  std::map<std::string, std::string_view, std::less<>> files;
};

// kInvalidArgument unless `path` is a repository path as above: 1..max_path_bytes of
// [A-Za-z0-9._+~-], optionally one "targets/" prefix, never starting with '.'.
Result<void> ValidateBundlePath(std::string_view path, size_t max_path_bytes = 512);

// Writes a bundle (files in path order). kInvalidArgument for an empty or overlong group ID or
// an invalid path.
Result<std::vector<uint8_t>> SerializeUpdateBundle(std::string_view group_id,
                                                   const std::map<std::string, std::string>& files);

// Splits a bundle. Errors (kInvalidArgument, kLimitExceeded for a limit) name the field and the
// entry: a wrong magic, a truncated entry, a duplicate or invalid path, trailing bytes.
Result<UpdateBundleView> ParseUpdateBundle(std::span<const uint8_t> bytes,
                                           const UpdateBundleLimits& limits = {});

}  // namespace moat::formats
