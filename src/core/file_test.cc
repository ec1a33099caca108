#include "core/file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

namespace moat {
namespace {

TEST(FileTest, AtomicWriteCreatesAndReplaces) {
  auto dir = TempDir::Create("moat-file-test");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "state.json";
  ASSERT_TRUE(AtomicWriteFile(path, std::string_view("old"), {.mode = 0600}));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_TRUE(AtomicWriteFile(path, std::string_view("new contents")));
  EXPECT_EQ(*ReadFile(path, 100), "new contents");
  // No temporary files are left behind.
  size_t entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir->path())) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST(FileTest, ExclusiveWriteRefusesToOverwrite) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir);
  auto path = dir->path() / "key.pem";
  ASSERT_TRUE(AtomicWriteFile(path, std::string_view("first"), {.exclusive = true}));
  auto again = AtomicWriteFile(path, std::string_view("second"), {.exclusive = true});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(*ReadFile(path, 100), "first");
}

TEST(FileTest, ReadFileEnforcesTheLimitAndNamesTheFile) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir);
  auto path = dir->path() / "big";
  ASSERT_TRUE(AtomicWriteFile(path, std::string(1000, 'x')));
  EXPECT_TRUE(ReadFile(path, 1000));
  auto r = ReadFile(path, 999);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_NE(r.error().message().find(path.string()), std::string::npos);
  auto missing = ReadFile(dir->path() / "missing", 10);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST(FileTest, TempDirIsRemoved) {
  std::filesystem::path p;
  {
    auto dir = TempDir::Create();
    ASSERT_TRUE(dir);
    p = dir->path();
    ASSERT_TRUE(AtomicWriteFile(p / "a", std::string_view("x")));
    ASSERT_TRUE(MakeDirectories(p / "b" / "c"));
    EXPECT_TRUE(std::filesystem::is_directory(p / "b" / "c"));
  }
  EXPECT_FALSE(std::filesystem::exists(p));
}

TEST(UniqueFdTest, ClosesOnDestructionAndMoves) {
  int raw;
  {
    auto fd = OpenFile("/dev/null", O_RDONLY);
    ASSERT_TRUE(fd);
    raw = fd->get();
    UniqueFd moved = std::move(*fd);
    EXPECT_FALSE(fd->valid());
    EXPECT_EQ(moved.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
}

}  // namespace
}  // namespace moat
