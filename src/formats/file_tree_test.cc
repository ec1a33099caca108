#include "formats/file_tree.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moat::formats {
namespace {

using Kind = FileTreeEntry::Kind;

FileTreeEntry Dir(std::string path, uint32_t mode = 0755) {
  return FileTreeEntry{.kind = Kind::kDirectory, .path = std::move(path), .mode = mode};
}
FileTreeEntry File(std::string path, std::string_view contents, uint32_t mode = 0644) {
  return FileTreeEntry{.kind = Kind::kFile,
                       .path = std::move(path),
                       .mode = mode,
                       .data = std::vector<uint8_t>(contents.begin(), contents.end())};
}
FileTreeEntry Link(std::string path, std::string target) {
  return FileTreeEntry{.kind = Kind::kSymlink,
                       .path = std::move(path),
                       .mode = 0777,
                       .link_target = std::move(target)};
}

// Raw encoder, written from docs/formats/image-package.md, for inputs Serialize refuses.
class RawTree {
 public:
  explicit RawTree(uint32_t count, uint32_t version = 1) {
    Bytes("MOATTREE");
    U32(version);
    U32(count);
  }
  RawTree& Entry(std::string_view path, uint8_t kind, uint16_t mode) {
    U16(static_cast<uint16_t>(path.size()));
    Bytes(path);
    out_.push_back(kind);
    U16(mode);
    return *this;
  }
  RawTree& U16(uint16_t v) {
    out_.push_back(static_cast<uint8_t>(v >> 8));
    out_.push_back(static_cast<uint8_t>(v));
    return *this;
  }
  RawTree& U32(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out_.push_back(static_cast<uint8_t>(v >> s));
    return *this;
  }
  RawTree& U64(uint64_t v) {
    for (int s = 56; s >= 0; s -= 8) out_.push_back(static_cast<uint8_t>(v >> s));
    return *this;
  }
  RawTree& Bytes(std::string_view b) {
    out_.insert(out_.end(), b.begin(), b.end());
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return out_; }

 private:
  std::vector<uint8_t> out_;
};

std::string SerializeError(const std::vector<FileTreeEntry>& entries) {
  auto r = SerializeFileTree(entries);
  if (r) return "(no error)";
  return r.error().message();
}

std::string ParseError(const std::vector<uint8_t>& bytes, const FileTreeLimits& limits = {}) {
  auto r = ParseFileTree(bytes, limits);
  if (r) return "(no error)";
  return r.error().message();
}

TEST(FileTreeTest, RoundTripsInCanonicalOrder) {
  std::vector<FileTreeEntry> entries = {
      File("bin/app",
           "\x7f"
           "ELF binary",
           0755),
      Dir("bin"),
      Dir("lib", 0700),
      Link("lib/libfoo.so", "libfoo.so.1"),
      File("lib/libfoo.so.1", std::string(5000, 'x')),
      Link("bin/lib", "../lib"),
      File("empty", ""),
      Dir("bin-extra"),  // sorts between "bin" and "bin/..." ('-' < '/')
  };
  auto bytes = SerializeFileTree(entries);
  ASSERT_TRUE(bytes) << bytes.error().message();
  auto parsed = ParseFileTree(*bytes);
  ASSERT_TRUE(parsed) << parsed.error().message();

  std::vector<FileTreeEntry> sorted = entries;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  EXPECT_EQ(*parsed, sorted);
  EXPECT_EQ((*parsed)[0].path, "bin");
  EXPECT_EQ((*parsed)[1].path, "bin-extra");

  // Deterministic: the same tree in another order encodes to the same bytes.
  std::vector<FileTreeEntry> reversed(entries.rbegin(), entries.rend());
  EXPECT_EQ(*SerializeFileTree(reversed), *bytes);
  EXPECT_EQ(*SerializeFileTree(*parsed), *bytes);
}

TEST(FileTreeTest, EncodingIsByteExact) {
  auto bytes =
      SerializeFileTree(std::vector{Dir("d", 0750), File("d/f", "hi", 0640), Link("d/l", "f")});
  ASSERT_TRUE(bytes);
  std::vector<uint8_t> expected = RawTree(3)
                                      .Entry("d", 1, 0750)
                                      .Entry("d/f", 2, 0640)
                                      .U64(2)
                                      .Bytes("hi")
                                      .Entry("d/l", 3, 0777)
                                      .U16(1)
                                      .Bytes("f")
                                      .bytes();
  EXPECT_EQ(*bytes, expected);
}

TEST(FileTreeTest, EmptyTreeIsValid) {
  auto bytes = SerializeFileTree({});
  ASSERT_TRUE(bytes);
  EXPECT_EQ(bytes->size(), 16u);
  auto parsed = ParseFileTree(*bytes);
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(parsed->empty());
}

TEST(FileTreeTest, ValidateTreePathRules) {
  EXPECT_TRUE(ValidateTreePath("a"));
  EXPECT_TRUE(ValidateTreePath("a/b.c/d"));
  EXPECT_TRUE(ValidateTreePath(".hidden"));
  EXPECT_TRUE(ValidateTreePath("..a/b..c/..."));
  EXPECT_TRUE(ValidateTreePath(std::string(4096, 'a')));

  struct Case {
    std::string path;
    std::string error;
  };
  const Case cases[] = {
      {"", "empty path"},
      {"/etc/passwd", "path '/etc/passwd': is absolute"},
      {"/", "path '/': is absolute"},
      {"..", "path '..': has a '..' component"},
      {"a/../b", "path 'a/../b': has a '..' component"},
      {"a/..", "path 'a/..': has a '..' component"},
      {".", "path '.': has a '.' component"},
      {"./a", "path './a': has a '.' component"},
      {"a/./b", "path 'a/./b': has a '.' component"},
      {"a//b", "path 'a//b': has an empty component"},
      {"a/", "path 'a/': ends with '/'"},
      {std::string("a\0b", 3), "path 'a\\x00b': contains a NUL byte"},
      {std::string(4097, 'a'), "path '" + std::string(128, 'a') + "...': longer than 4096 bytes"},
  };
  for (const Case& c : cases) {
    auto r = ValidateTreePath(c.path);
    ASSERT_FALSE(r) << c.path;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), c.error);
  }
}

TEST(FileTreeTest, SerializeAndParseApplyThePathRulesNamingTheEntry) {
  EXPECT_EQ(SerializeError({File("/etc/shadow", "x")}),
            "file tree: path '/etc/shadow': is absolute");
  EXPECT_EQ(SerializeError({Dir("a"), File("a//b", "x")}),
            "file tree: path 'a//b': has an empty component");
  EXPECT_EQ(SerializeError({File("../escape", "x")}),
            "file tree: path '../escape': has a '..' component");
  EXPECT_EQ(SerializeError({File("", "x")}), "file tree: empty path");
  // The same rules on the parse side.
  EXPECT_EQ(ParseError(RawTree(1).Entry("a/../../x", 1, 0755).bytes()),
            "file tree: path 'a/../../x': has a '..' component");
  EXPECT_EQ(ParseError(RawTree(1).Entry("d/", 1, 0755).bytes()),
            "file tree: path 'd/': ends with '/'");
  EXPECT_EQ(ParseError(RawTree(1).Entry(std::string_view("x\0y", 3), 1, 0755).bytes()),
            "file tree: path 'x\\x00y': contains a NUL byte");
}

TEST(FileTreeTest, RefusesDuplicates) {
  EXPECT_EQ(SerializeError({File("a", "1"), File("a", "2")}),
            "file tree: path 'a': duplicate entry");
  EXPECT_EQ(SerializeError({Dir("a"), File("a", "2")}), "file tree: path 'a': duplicate entry");
  EXPECT_EQ(ParseError(RawTree(2).Entry("a", 1, 0755).Entry("a", 1, 0755).bytes()),
            "file tree: path 'a': duplicate entry");
}

TEST(FileTreeTest, ParseRequiresCanonicalOrder) {
  EXPECT_EQ(ParseError(RawTree(2).Entry("b", 1, 0755).Entry("a", 1, 0755).bytes()),
            "file tree: path 'a' is out of order after 'b' (entries must be sorted by path)");
}

TEST(FileTreeTest, ParentsMustBeListedDirectories) {
  EXPECT_EQ(SerializeError({File("a/b", "x")}),
            "file tree: path 'a/b': parent directory 'a' is not listed before it");
  EXPECT_EQ(SerializeError({Dir("a"), File("a/b/c", "x")}),
            "file tree: path 'a/b/c': parent directory 'a/b' is not listed before it");
  EXPECT_EQ(SerializeError({File("a", "x"), File("a/b", "x")}),
            "file tree: path 'a/b': parent 'a' is a file, not a directory");
  EXPECT_EQ(SerializeError({Link("a", "b"), Dir("b"), File("a/c", "x")}),
            "file tree: path 'a/c': parent 'a' is a symlink, not a directory");
}

TEST(FileTreeTest, RefusesSetuidSetgidStickyAndTypeBits) {
  for (uint32_t mode : {04755u, 02755u, 01777u, 0100644u, 07777u, 01000u}) {
    auto r = SerializeFileTree(std::vector{File("bin/app", "x", mode), Dir("bin")});
    ASSERT_FALSE(r) << std::oct << mode;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(),
              fmt::format("file tree: path 'bin/app': mode {:#o} is not allowed (permission bits "
                          "0..0777 only; setuid, setgid and sticky are refused)",
                          mode));
  }
  EXPECT_EQ(ParseError(RawTree(1).Entry("d", 1, 04755).bytes()),
            "file tree: path 'd': mode 04755 is not allowed (permission bits 0..0777 only; "
            "setuid, setgid and sticky are refused)");
  EXPECT_TRUE(SerializeFileTree(std::vector{File("f", "x", 0), File("g", "x", 0777)}));
}

TEST(FileTreeTest, SymlinkTargets) {
  // Allowed: relative targets that stay inside, dangling ones included.
  EXPECT_TRUE(SerializeFileTree(std::vector{Dir("a"), Dir("a/b"), Link("a/b/up", "../.."),
                                            Link("a/b/c", "../../x/y"), Link("top", "a/b")}));

  EXPECT_EQ(SerializeError({Dir("a"), Link("a/b", "../../x")}),
            "file tree: symlink 'a/b': target '../../x' resolves outside the tree");
  EXPECT_EQ(SerializeError({Link("l", "..")}),
            "file tree: symlink 'l': target '..' resolves outside the tree");
  EXPECT_EQ(SerializeError({Link("l", "/etc/passwd")}),
            "file tree: symlink 'l': target '/etc/passwd' is absolute");
  EXPECT_EQ(SerializeError({Link("l", "")}), "file tree: symlink 'l': empty target");
  EXPECT_EQ(SerializeError({Link("l", std::string("a\0b", 3))}),
            "file tree: symlink 'l': target 'a\\x00b' contains a NUL byte");
  // Lexically inside, but through another link it could climb out ("s -> ." first).
  EXPECT_EQ(SerializeError({Dir("d"), Link("d/s", "x"), Link("d/t", "s/../..")}),
            "file tree: symlink 'd/t': target 's/../..' has '..' after a name (only leading "
            "'..' components are allowed)");
  EXPECT_EQ(SerializeError({Link("l", "./x")}),
            "file tree: symlink 'l': target './x' has an empty or '.' component");
  EXPECT_EQ(SerializeError({Link("l", "x//y")}),
            "file tree: symlink 'l': target 'x//y' has an empty or '.' component");
  EXPECT_EQ(SerializeError({Link("l", "x/")}),
            "file tree: symlink 'l': target 'x/' has an empty or '.' component");

  // Parse applies the same rules.
  EXPECT_EQ(
      ParseError(
          RawTree(2).Entry("a", 1, 0755).Entry("a/b", 3, 0777).U16(7).Bytes("../../x").bytes()),
      "file tree: symlink 'a/b': target '../../x' resolves outside the tree");
}

TEST(FileTreeTest, EntryFieldsMustMatchTheKind) {
  FileTreeEntry dir_with_data = Dir("d");
  dir_with_data.data = {1};
  EXPECT_EQ(SerializeError({dir_with_data}), "file tree: directory 'd' has file contents");
  FileTreeEntry file_with_target = File("f", "x");
  file_with_target.link_target = "y";
  EXPECT_EQ(SerializeError({file_with_target}), "file tree: file 'f' has a link target");
  FileTreeEntry link_with_data = Link("l", "x");
  link_with_data.data = {1};
  EXPECT_EQ(SerializeError({link_with_data}), "file tree: symlink 'l' has file contents");
}

TEST(FileTreeTest, RefusesUnknownEntryTypes) {
  for (uint8_t kind : {0, 4, 5, 255}) {
    auto r = ParseFileTree(RawTree(1).Entry("dev-null", kind, 0666).bytes());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(),
              fmt::format("file tree: path 'dev-null': unsupported entry type {} (device nodes, "
                          "FIFOs and hard links are not allowed)",
                          kind));
  }
}

TEST(FileTreeTest, RefusesBadHeaderAndTrailingBytes) {
  std::vector<uint8_t> bad_magic = RawTree(0).bytes();
  bad_magic[0] = 'X';
  EXPECT_EQ(ParseError(bad_magic), "file tree: bad magic (not a Moat file tree)");
  EXPECT_EQ(ParseError(RawTree(0, 2).bytes()),
            "file tree: unsupported version 2 (this reader supports 1)");
  EXPECT_EQ(ParseError(RawTree(0).Bytes("junk").bytes()),
            "file tree: 4 trailing bytes after the last entry");
}

TEST(FileTreeTest, EveryTruncationFails) {
  auto bytes = SerializeFileTree(std::vector{Dir("a"), File("a/f", "contents"), Link("a/l", "f")});
  ASSERT_TRUE(bytes);
  for (size_t n = 0; n < bytes->size(); ++n) {
    std::vector<uint8_t> prefix(bytes->begin(), bytes->begin() + static_cast<ptrdiff_t>(n));
    auto r = ParseFileTree(prefix);
    ASSERT_FALSE(r) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << r.error().message();
  }
  EXPECT_EQ(ParseError({'M', 'O', 'A', 'T', 'T', 'R', 'E', 'E', 0, 0}),
            "file tree: truncated reading the version (4 bytes needed at offset 8, 2 remain)");
  EXPECT_EQ(ParseError(RawTree(1).U16(5).Bytes("abcd").bytes()),
            "file tree: truncated reading the path of entry 0 (5 bytes needed at offset 18, 4 "
            "remain)");
  EXPECT_EQ(ParseError(RawTree(1).U16(5).Bytes("ab").bytes()),
            "file tree: 1 entries cannot fit in the remaining 4 bytes (truncated)");
  EXPECT_EQ(ParseError(RawTree(1).Entry("f", 2, 0644).U64(10).Bytes("abc").bytes()),
            "file tree: file 'f' declares 10 bytes but only 3 remain (truncated)");
}

TEST(FileTreeTest, AbsurdLengthsAreRefusedBeforeAllocating) {
  // A file declaring 2^60 bytes: refused by the limit, and with the limits lifted, by the
  // bytes actually present. Either way nothing of that size is allocated (ASan would know).
  std::vector<uint8_t> huge = RawTree(1).Entry("f", 2, 0644).U64(1ull << 60).Bytes("abc").bytes();
  auto limited = ParseFileTree(huge);
  ASSERT_FALSE(limited);
  EXPECT_EQ(limited.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(limited.error().message(),
            "file tree: file 'f' of 1152921504606846976 bytes exceeds the limit of 1073741824 "
            "bytes");
  FileTreeLimits unlimited{.max_total_bytes = SIZE_MAX, .max_file_bytes = SIZE_MAX};
  EXPECT_EQ(ParseError(huge, unlimited),
            "file tree: file 'f' declares 1152921504606846976 bytes but only 3 remain "
            "(truncated)");

  // An entry count of 2^32-1: over the limit; with the limit lifted, more than fits.
  auto many = ParseFileTree(RawTree(0xffffffffu).bytes());
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(many.error().message(), "file tree: 4294967295 entries exceed the limit of 100000");
  EXPECT_EQ(ParseError(RawTree(0xffffffffu).Bytes("abcdefghijkl").bytes(),
                       FileTreeLimits{.max_entries = SIZE_MAX}),
            "file tree: 4294967295 entries cannot fit in the remaining 12 bytes (truncated)");

  // A 65535-byte path length with 4 bytes present.
  EXPECT_EQ(ParseError(RawTree(1).U16(0xffff).Bytes("abcd").bytes()),
            "file tree: entry 0: path of 65535 bytes exceeds the limit of 4096 bytes");
  EXPECT_EQ(ParseError(RawTree(1).Entry("l", 3, 0777).U16(0xffff).Bytes("ab").bytes()),
            "file tree: symlink 'l': target of 65535 bytes exceeds the limit of 4096 bytes");
}

TEST(FileTreeTest, EnforcesLimits) {
  auto bytes = SerializeFileTree(
      std::vector{Dir("a"), Dir("a/b"), File("a/b/c", "12345"), File("a/d", "123")});
  ASSERT_TRUE(bytes);
  auto code_and_message = [&](const FileTreeLimits& limits) {
    auto r = ParseFileTree(*bytes, limits);
    EXPECT_FALSE(r);
    if (r) return std::string("(no error)");
    EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
    return r.error().message();
  };
  EXPECT_EQ(code_and_message({.max_entries = 3}), "file tree: 4 entries exceed the limit of 3");
  EXPECT_EQ(code_and_message({.max_path_bytes = 4}),
            "file tree: entry 2: path of 5 bytes exceeds the limit of 4 bytes");
  EXPECT_EQ(code_and_message({.max_total_bytes = 7}),
            "file tree: file 'a/d' brings the total to more than the limit of 7 bytes");
  EXPECT_EQ(code_and_message({.max_file_bytes = 4}),
            "file tree: file 'a/b/c' of 5 bytes exceeds the limit of 4 bytes");
  EXPECT_EQ(code_and_message({.max_depth = 2}),
            "file tree: path 'a/b/c' has 3 components, over the depth limit of 2");
  EXPECT_TRUE(ParseFileTree(*bytes, {.max_entries = 4,
                                     .max_path_bytes = 5,
                                     .max_total_bytes = 8,
                                     .max_file_bytes = 5,
                                     .max_depth = 3}));
}

TEST(FileTreeTest, LongPathsInErrorsAreShortened) {
  std::string long_name(300, 'n');
  auto r = SerializeFileTree(std::vector{File(long_name + "/x", "")});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "file tree: path '" + std::string(128, 'n') +
                                     "...': parent directory '" + std::string(128, 'n') +
                                     "...' is not listed before it");
}

}  // namespace
}  // namespace moat::formats
