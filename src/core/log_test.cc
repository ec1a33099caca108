#include "core/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

#include "core/file.h"
#include "core/json.h"

namespace moat::log {
namespace {

// Runs `body` with stderr redirected to a file and returns what was written.
template <typename Fn>
std::string CaptureStderr(Fn&& body) {
  auto dir = TempDir::Create("moat-log");
  EXPECT_TRUE(dir.has_value());
  const auto path = dir->path() / "stderr";
  std::fflush(stderr);
  const int saved = ::dup(2);
  FILE* f = std::fopen(path.c_str(), "w");
  EXPECT_NE(f, nullptr);
  ::dup2(::fileno(f), 2);
  body();
  spdlog::default_logger()->flush();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(f);
  return *ReadFile(path, 1 << 20);
}

TEST(LogTest, JsonFormatEscapesTheMessage) {
  std::string out = CaptureStderr([] {
    Init("json-test", Level::kInfo, Format::kJson);
    Info("device {} said \"hi\"\nforged\":1,\"x", "abc");
    Debug("not shown at info");
  });
  // One line, one object, the message intact.
  ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  auto j = ParseJson(out.substr(0, out.size() - 1), "log line");
  ASSERT_TRUE(j.has_value()) << out;
  EXPECT_EQ((*j)["msg"], "device abc said \"hi\"\nforged\":1,\"x");
  EXPECT_EQ((*j)["level"], "info");
  EXPECT_EQ((*j)["program"], "json-test");
  EXPECT_EQ((*j)["pid"], ::getpid());
  EXPECT_FALSE(j->contains("x"));
}

TEST(LogTest, TextFormatIsOneLinePerMessage) {
  std::string out = CaptureStderr([] {
    Init("text-test", Level::kWarn, Format::kText);
    Warn("careful");
    Info("hidden");
  });
  EXPECT_NE(out.find("careful"), std::string::npos);
  EXPECT_EQ(out.find("hidden"), std::string::npos);
  EXPECT_NE(out.find("text-test["), std::string::npos);
}

TEST(LogTest, ParsesNames) {
  Format f = Format::kText;
  EXPECT_TRUE(ParseFormat("json", f));
  EXPECT_EQ(f, Format::kJson);
  EXPECT_FALSE(ParseFormat("xml", f));
  Level l = Level::kInfo;
  EXPECT_TRUE(ParseLevel("debug", l));
  EXPECT_EQ(l, Level::kDebug);
  EXPECT_FALSE(ParseLevel("loud", l));
}

}  // namespace
}  // namespace moat::log
