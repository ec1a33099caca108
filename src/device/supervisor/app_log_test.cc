// The size-capped app log.
#include "device/supervisor/app_log.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "core/file.h"

namespace moat::device::supervisor {
namespace {

std::string Read(const std::filesystem::path& p) { return ReadFile(p, 1 << 20).value_or("<none>"); }

TEST(AppLogTest, AppendsAndRotatesAtTheCapKeepingTheNewest) {
  auto dir = TempDir::Create("moat-applog");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "stdout.log";
  ASSERT_TRUE(AtomicWriteFile(path, std::string_view("old\n")));
  AppLog log(path, 10);
  ASSERT_TRUE(log.Append("12345"));
  EXPECT_EQ(Read(path), "old\n12345") << "appends to what a previous run left";
  ASSERT_TRUE(log.Append("abcdefgh"));  // 9 + 8 > 10: split at the cap
  EXPECT_EQ(Read(dir->path() / "stdout.log.1"), "old\n12345a");
  EXPECT_EQ(Read(path), "bcdefgh");
  ASSERT_TRUE(log.Append("0123456789XYZ"));  // more than what is left, and than the cap
  EXPECT_EQ(Read(dir->path() / "stdout.log.1"), "bcdefgh012");
  EXPECT_EQ(Read(path), "3456789XYZ");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST(AppLogTest, AnEmptyPathDiscards) {
  AppLog log("", 10);
  EXPECT_TRUE(log.Append("anything"));
}

TEST(AppLogTest, AnUnwritablePathIsAnErrorNamingIt) {
  AppLog log("/nonexistent-dir/stdout.log", 10);
  auto r = log.Append("x");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("/nonexistent-dir/stdout.log"), std::string::npos)
      << r.error().message();
}

TEST(AppLogTest, TheTailSpansTheRotatedFileAndTheCurrentOne) {
  auto dir = TempDir::Create("moat-applog");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "stdout.log";
  EXPECT_EQ(ReadLogTail(path, 100).value_or("<error>"), "") << "no log yet";
  AppLog log(path, 10);
  ASSERT_TRUE(log.Append("0123456789abcdef"));  // "0123456789" rotated, "abcdef" current
  EXPECT_EQ(Read(path), "abcdef");
  EXPECT_EQ(ReadLogTail(path, 3).value_or(""), "def");
  EXPECT_EQ(ReadLogTail(path, 6).value_or(""), "abcdef");
  EXPECT_EQ(ReadLogTail(path, 9).value_or(""), "789abcdef");
  EXPECT_EQ(ReadLogTail(path, 100).value_or(""), "0123456789abcdef");
  EXPECT_EQ(ReadLogTail(path, 0).value_or("x"), "");
  EXPECT_EQ(ReadLogTail("", 10).value_or("x"), "") << "a discarded stream";
}

}  // namespace
}  // namespace moat::device::supervisor
