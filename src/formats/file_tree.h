// The file tree: the payload of an app or OS image. Directories, regular files and symbolic
// links only — device nodes, FIFOs, sockets and hard links cannot be represented at all.
//
// The binary encoding (docs/formats/image-package.md, "File tree") is canonical: entries are
// sorted by path (bytewise), so one tree has exactly one encoding and a package's digest
// depends only on the tree's contents. Parents are explicit: every entry's parent directory
// must itself be an entry (it sorts before its children automatically).
//
// Pure code: no file I/O. Writing a parsed tree to disk is the installer's job; this layer
// guarantees that every path is relative and normalized, that no entry can name a location
// outside the tree, that no symlink can point outside it, and that no mode carries setuid,
// setgid or sticky bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat::formats {

struct FileTreeEntry {
  enum class Kind { kDirectory, kFile, kSymlink };
  Kind kind = Kind::kFile;
  // Relative, '/'-separated, normalized (see ValidateTreePath).
  std::string path;
  // Permission bits only, 0..0777. setuid, setgid and sticky are refused.
  uint32_t mode = 0;
  // Contents of a regular file; empty for directories and symlinks.
  std::vector<uint8_t> data;
  // Target of a symlink; empty for directories and files.
  std::string link_target;

  bool operator==(const FileTreeEntry&) const = default;
};

struct FileTreeLimits {
  size_t max_entries = 100000;
  size_t max_path_bytes = 4096;         // per path and per symlink target
  size_t max_total_bytes = 1ull << 30;  // sum of all file contents
  size_t max_file_bytes = 1ull << 30;   // one file's contents
  size_t max_depth = 64;                // path components
};

// The hard ceiling on a path's length, whatever the limits say (Linux's PATH_MAX).
inline constexpr size_t kMaxTreePathBytes = 4096;

// Encodes `entries` in canonical order (sorted by path; the input may be in any order).
// Validates exactly as ParseFileTree does with default limits, so whatever this returns
// parses back to the same entries, sorted.
Result<std::vector<uint8_t>> SerializeFileTree(std::span<const FileTreeEntry> entries);

// Decodes and validates a tree. Every length is checked against `limits` and against the
// remaining input before anything is allocated. Errors name the offending entry's path.
Result<std::vector<FileTreeEntry>> ParseFileTree(std::span<const uint8_t> bytes,
                                                 const FileTreeLimits& limits = {});

// A tree path is non-empty, at most kMaxTreePathBytes long, relative (no leading '/'), has no
// trailing '/', no NUL byte, and no empty, "." or ".." component. Errors (kInvalidArgument)
// read "path '<path>': <why>", with non-printable bytes escaped as \xNN.
Result<void> ValidateTreePath(std::string_view path);

}  // namespace moat::formats
