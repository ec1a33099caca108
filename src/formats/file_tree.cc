#include "formats/file_tree.h"

#include <algorithm>
#include <limits>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "formats/byte_io.h"

namespace moat::formats {
namespace {

using Kind = FileTreeEntry::Kind;

// Wire format (docs/formats/image-package.md, "File tree"):
//   "MOATTREE" | u32 BE version = 1 | u32 BE entry_count | entry*
//   entry: u16 BE path_len | path | u8 kind | u16 BE mode
//          kind 2 (file):    u64 BE size | contents
//          kind 3 (symlink): u16 BE target_len | target
constexpr std::string_view kMagic = "MOATTREE";
constexpr uint32_t kVersion = 1;
constexpr uint8_t kKindDirectory = 1;
constexpr uint8_t kKindFile = 2;
constexpr uint8_t kKindSymlink = 3;
// The smallest possible entry: path_len, a one-byte path, kind and mode.
constexpr size_t kMinEntryBytes = 2 + 1 + 1 + 2;
constexpr uint32_t kMaxMode = 0777;

// Renders untrusted bytes for an error message: printable ASCII as is, anything else as
// \xNN, cut at 128 input bytes so that a 4 KiB path does not flood a log line.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 128;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\\' || c == '\'') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > kMaxShown) out += "...";
  return out;
}

size_t CountComponents(std::string_view path) {
  return static_cast<size_t>(std::count(path.begin(), path.end(), '/')) + 1;
}

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kDirectory:
      return "directory";
    case Kind::kFile:
      return "file";
    case Kind::kSymlink:
      return "symlink";
  }
  return "entry";
}

// SECURITY: a symlink must not lead out of the tree. Lexical resolution alone is not enough
// when a target walks through another link ("s -> ." then "t -> s/../.." climbs one level
// higher than it looks), so we accept only targets of the form "../../name/name": '..'
// components may only lead, and never more of them than the link's directory is deep.
// Then each '..' steps through real directories of the tree, and every later component
// descends — through a real directory, or through a link that obeys the same rule.
Result<void> ValidateSymlinkTarget(std::string_view link_path, std::string_view target,
                                   size_t max_target_bytes) {
  auto fail = [&](std::string_view why) {
    return Fail(ErrorCode::kInvalidArgument, "file tree: symlink '{}': target '{}' {}",
                Quote(link_path), Quote(target), why);
  };
  if (target.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "file tree: symlink '{}': empty target",
                Quote(link_path));
  }
  if (target.size() > max_target_bytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "file tree: symlink '{}': target of {} bytes exceeds the limit of {} bytes",
                Quote(link_path), target.size(), max_target_bytes);
  }
  if (target.find('\0') != std::string_view::npos) return fail("contains a NUL byte");
  if (target.front() == '/') return fail("is absolute");
  size_t ups = 0;
  bool seen_name = false;
  size_t start = 0;
  while (start <= target.size()) {
    size_t end = target.find('/', start);
    if (end == std::string_view::npos) end = target.size();
    std::string_view component = target.substr(start, end - start);
    if (component.empty() || component == ".") return fail("has an empty or '.' component");
    if (component == "..") {
      if (seen_name)
        return fail("has '..' after a name (only leading '..' components are allowed)");
      ++ups;
    } else {
      seen_name = true;
    }
    start = end + 1;
  }
  size_t link_dir_depth = CountComponents(link_path) - 1;
  if (ups > link_dir_depth) return fail("resolves outside the tree");
  return Ok();
}

// Checks entries one at a time, in encoding order, against the rules shared by
// SerializeFileTree and ParseFileTree.
class TreeValidator {
 public:
  explicit TreeValidator(const FileTreeLimits& limits) : limits_(limits) {}

  // Path rules, order, depth and parent. Called before the entry's kind is known to be valid,
  // so that every later error can name the path.
  Result<void> CheckPath(std::string_view path) {
    if (path.size() > limits_.max_path_bytes) {
      return Fail(ErrorCode::kLimitExceeded,
                  "file tree: path '{}' of {} bytes exceeds the limit of {} bytes", Quote(path),
                  path.size(), limits_.max_path_bytes);
    }
    if (auto ok = ValidateTreePath(path); !ok) return Fail(ok.error().WithContext("file tree"));
    if (have_previous_) {
      if (path == previous_) {
        return Fail(ErrorCode::kInvalidArgument, "file tree: path '{}': duplicate entry",
                    Quote(path));
      }
      if (path < std::string_view(previous_)) {
        return Fail(ErrorCode::kInvalidArgument,
                    "file tree: path '{}' is out of order after '{}' (entries must be sorted "
                    "by path)",
                    Quote(path), Quote(previous_));
      }
    }
    size_t depth = CountComponents(path);
    if (depth > limits_.max_depth) {
      return Fail(ErrorCode::kLimitExceeded,
                  "file tree: path '{}' has {} components, over the depth limit of {}", Quote(path),
                  depth, limits_.max_depth);
    }
    if (size_t slash = path.rfind('/'); slash != std::string_view::npos) {
      std::string parent(path.substr(0, slash));
      auto it = seen_.find(parent);
      if (it == seen_.end()) {
        return Fail(ErrorCode::kInvalidArgument,
                    "file tree: path '{}': parent directory '{}' is not listed before it",
                    Quote(path), Quote(parent));
      }
      if (it->second != Kind::kDirectory) {
        return Fail(ErrorCode::kInvalidArgument,
                    "file tree: path '{}': parent '{}' is a {}, not a directory", Quote(path),
                    Quote(parent), KindName(it->second));
      }
    }
    previous_.assign(path);
    have_previous_ = true;
    return Ok();
  }

  Result<void> CheckMode(std::string_view path, uint32_t mode) const {
    // SECURITY: setuid/setgid would let an app image plant privileged binaries; sticky and
    // file-type bits have no meaning here. Only the nine permission bits are accepted.
    if (mode > kMaxMode) {
      return Fail(ErrorCode::kInvalidArgument,
                  "file tree: path '{}': mode {:#o} is not allowed (permission bits 0..0777 "
                  "only; setuid, setgid and sticky are refused)",
                  Quote(path), mode);
    }
    return Ok();
  }

  Result<void> CheckFileSize(std::string_view path, uint64_t size) {
    if (size > limits_.max_file_bytes) {
      return Fail(ErrorCode::kLimitExceeded,
                  "file tree: file '{}' of {} bytes exceeds the limit of {} bytes", Quote(path),
                  size, limits_.max_file_bytes);
    }
    if (size > limits_.max_total_bytes - std::min<uint64_t>(total_, limits_.max_total_bytes)) {
      return Fail(ErrorCode::kLimitExceeded,
                  "file tree: file '{}' brings the total to more than the limit of {} bytes",
                  Quote(path), limits_.max_total_bytes);
    }
    total_ += size;
    return Ok();
  }

  Result<void> CheckTarget(std::string_view path, std::string_view target) const {
    return ValidateSymlinkTarget(path, target, limits_.max_path_bytes);
  }

  // Records a fully checked entry so that later entries may name it as their parent.
  void Add(std::string_view path, Kind kind) { seen_.emplace(std::string(path), kind); }

 private:
  const FileTreeLimits& limits_;
  std::unordered_map<std::string, Kind> seen_;
  std::string previous_;
  bool have_previous_ = false;
  uint64_t total_ = 0;
};

}  // namespace

Result<void> ValidateTreePath(std::string_view path) {
  auto fail = [&](std::string_view why) {
    return Fail(ErrorCode::kInvalidArgument, "path '{}': {}", Quote(path), why);
  };
  if (path.empty()) return Fail(ErrorCode::kInvalidArgument, "empty path");
  if (path.size() > kMaxTreePathBytes) {
    return fail(fmt::format("longer than {} bytes", kMaxTreePathBytes));
  }
  if (path.find('\0') != std::string_view::npos) return fail("contains a NUL byte");
  if (path.front() == '/') return fail("is absolute");
  if (path.back() == '/') return fail("ends with '/'");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view component = path.substr(start, end - start);
    if (component.empty()) return fail("has an empty component");
    if (component == ".") return fail("has a '.' component");
    if (component == "..") return fail("has a '..' component");
    start = end + 1;
  }
  return Ok();
}

Result<std::vector<uint8_t>> SerializeFileTree(std::span<const FileTreeEntry> entries) {
  const FileTreeLimits limits;
  if (entries.size() > limits.max_entries) {
    return Fail(ErrorCode::kLimitExceeded, "file tree: {} entries exceed the limit of {}",
                entries.size(), limits.max_entries);
  }
  std::vector<const FileTreeEntry*> sorted;
  sorted.reserve(entries.size());
  for (const FileTreeEntry& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const FileTreeEntry* a, const FileTreeEntry* b) { return a->path < b->path; });

  TreeValidator validator(limits);
  std::vector<uint8_t> out;
  PutBytes(out, kMagic);
  PutU32(out, kVersion);
  PutU32(out, static_cast<uint32_t>(entries.size()));
  for (const FileTreeEntry* e : sorted) {
    MOAT_TRY(validator.CheckPath(e->path));
    MOAT_TRY(validator.CheckMode(e->path, e->mode));
    uint8_t kind_byte = 0;
    switch (e->kind) {
      case Kind::kDirectory:
        kind_byte = kKindDirectory;
        break;
      case Kind::kFile:
        kind_byte = kKindFile;
        break;
      case Kind::kSymlink:
        kind_byte = kKindSymlink;
        break;
      default:
        return Fail(ErrorCode::kInvalidArgument, "file tree: path '{}': invalid entry kind",
                    Quote(e->path));
    }
    if (e->kind != Kind::kFile && !e->data.empty()) {
      return Fail(ErrorCode::kInvalidArgument, "file tree: {} '{}' has file contents",
                  KindName(e->kind), Quote(e->path));
    }
    if (e->kind != Kind::kSymlink && !e->link_target.empty()) {
      return Fail(ErrorCode::kInvalidArgument, "file tree: {} '{}' has a link target",
                  KindName(e->kind), Quote(e->path));
    }
    PutU16(out, static_cast<uint16_t>(e->path.size()));  // <= kMaxTreePathBytes, checked
    PutBytes(out, e->path);
    PutU8(out, kind_byte);
    PutU16(out, static_cast<uint16_t>(e->mode));  // <= 0777, checked
    if (e->kind == Kind::kFile) {
      MOAT_TRY(validator.CheckFileSize(e->path, e->data.size()));
      PutU64(out, e->data.size());
      out.insert(out.end(), e->data.begin(), e->data.end());
    } else if (e->kind == Kind::kSymlink) {
      MOAT_TRY(validator.CheckTarget(e->path, e->link_target));
      PutU16(out, static_cast<uint16_t>(e->link_target.size()));
      PutBytes(out, e->link_target);
    }
    validator.Add(e->path, e->kind);
  }
  return out;
}

Result<std::vector<FileTreeEntry>> ParseFileTree(std::span<const uint8_t> bytes,
                                                 const FileTreeLimits& limits) {
  ByteReader in(bytes, "file tree");
  MOAT_ASSIGN_OR_RETURN(auto magic, in.ReadBytes(kMagic.size(), "the magic"));
  if (!std::equal(magic.begin(), magic.end(), kMagic.begin())) {
    return Fail(ErrorCode::kInvalidArgument, "file tree: bad magic (not a Moat file tree)");
  }
  MOAT_ASSIGN_OR_RETURN(uint32_t version, in.ReadBigEndian<uint32_t>("the version"));
  if (version != kVersion) {
    return Fail(ErrorCode::kInvalidArgument,
                "file tree: unsupported version {} (this reader supports {})", version, kVersion);
  }
  MOAT_ASSIGN_OR_RETURN(uint32_t count, in.ReadBigEndian<uint32_t>("the entry count"));
  if (count > limits.max_entries) {
    return Fail(ErrorCode::kLimitExceeded, "file tree: {} entries exceed the limit of {}", count,
                limits.max_entries);
  }
  // SECURITY: the count is checked against what the remaining bytes can hold before it sizes
  // any allocation.
  if (count > in.remaining() / kMinEntryBytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "file tree: {} entries cannot fit in the remaining {} bytes (truncated)", count,
                in.remaining());
  }
  std::vector<FileTreeEntry> entries;
  entries.reserve(count);
  TreeValidator validator(limits);
  for (uint32_t i = 0; i < count; ++i) {
    FileTreeEntry e;
    in.set_record("entry", i);
    MOAT_ASSIGN_OR_RETURN(uint16_t path_len, in.ReadBigEndian<uint16_t>("the path length"));
    if (path_len > limits.max_path_bytes) {
      return Fail(ErrorCode::kLimitExceeded,
                  "file tree: entry {}: path of {} bytes exceeds the limit of {} bytes", i,
                  path_len, limits.max_path_bytes);
    }
    MOAT_ASSIGN_OR_RETURN(auto path_bytes, in.ReadBytes(path_len, "the path"));
    e.path.assign(path_bytes.begin(), path_bytes.end());
    MOAT_TRY(validator.CheckPath(e.path));

    MOAT_ASSIGN_OR_RETURN(uint8_t kind_byte, in.ReadBigEndian<uint8_t>("the entry type"));
    switch (kind_byte) {
      case kKindDirectory:
        e.kind = Kind::kDirectory;
        break;
      case kKindFile:
        e.kind = Kind::kFile;
        break;
      case kKindSymlink:
        e.kind = Kind::kSymlink;
        break;
      default:
        return Fail(ErrorCode::kInvalidArgument,
                    "file tree: path '{}': unsupported entry type {} (device nodes, FIFOs and "
                    "hard links are not allowed)",
                    Quote(e.path), kind_byte);
    }
    MOAT_ASSIGN_OR_RETURN(uint16_t mode, in.ReadBigEndian<uint16_t>("the mode"));
    MOAT_TRY(validator.CheckMode(e.path, mode));
    e.mode = mode;

    if (e.kind == Kind::kFile) {
      MOAT_ASSIGN_OR_RETURN(uint64_t size, in.ReadBigEndian<uint64_t>("the file size"));
      // SECURITY: limits first, then the bytes actually present; only then allocate.
      MOAT_TRY(validator.CheckFileSize(e.path, size));
      if (size > in.remaining()) {
        return Fail(ErrorCode::kInvalidArgument,
                    "file tree: file '{}' declares {} bytes but only {} remain (truncated)",
                    Quote(e.path), size, in.remaining());
      }
      auto data = in.Take(static_cast<size_t>(size));
      e.data.assign(data.begin(), data.end());
    } else if (e.kind == Kind::kSymlink) {
      MOAT_ASSIGN_OR_RETURN(uint16_t target_len,
                            in.ReadBigEndian<uint16_t>("the link target length"));
      if (target_len > limits.max_path_bytes) {
        return Fail(ErrorCode::kLimitExceeded,
                    "file tree: symlink '{}': target of {} bytes exceeds the limit of {} bytes",
                    Quote(e.path), target_len, limits.max_path_bytes);
      }
      MOAT_ASSIGN_OR_RETURN(auto target, in.ReadBytes(target_len, "the link target"));
      e.link_target.assign(target.begin(), target.end());
      MOAT_TRY(validator.CheckTarget(e.path, e.link_target));
    }
    validator.Add(e.path, e.kind);
    entries.push_back(std::move(e));
  }
  if (in.remaining() != 0) {
    return Fail(ErrorCode::kInvalidArgument, "file tree: {} trailing bytes after the last entry",
                in.remaining());
  }
  return entries;
}

}  // namespace moat::formats
