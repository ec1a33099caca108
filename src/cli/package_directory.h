// Reads an application's package directory (what `pack-application` packs) into memory.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/file_tree.h"

namespace moat::cli {

struct PackageDirectory {
  std::string manifest_json;                  // app_manifest.json, not part of `files`
  std::vector<formats::FileTreeEntry> files;  // everything else, parents before children
  uint64_t total_bytes = 0;
};

// Walks `dir` without following symlinks. Regular files, directories and symlinks are taken
// with their permission bits; anything else (device nodes, FIFOs, sockets) and setuid/setgid
// files are refused with an error naming the path.
Result<PackageDirectory> ReadPackageDirectory(const std::filesystem::path& dir);

}  // namespace moat::cli
