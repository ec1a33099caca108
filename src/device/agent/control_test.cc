#include "device/agent/control.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "core/file.h"

namespace moat::device::agent {
namespace {

using ::testing::HasSubstr;

TEST(ControlTest, AnswersOneRequestPerConnection) {
  auto dir = TempDir::Create("moat-control");
  ASSERT_TRUE(dir.has_value());
  const auto path = dir->path() / "run" / "moatctl.sock";
  int calls = 0;
  auto server = ControlServer::Start(path, [&](const Json& r) {
    ++calls;
    return Json{{"echo", r.value("command", "")}};
  });
  ASSERT_TRUE(server.has_value()) << server.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(path.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  for (int i = 0; i < 3; ++i) {
    auto a = ControlCall(path, {{"command", "status"}});
    ASSERT_TRUE(a.has_value()) << a.error().message();
    EXPECT_EQ((*a)["echo"], "status");
  }
  EXPECT_EQ(calls, 3);
  // An error answer becomes an error for the caller.
  server->reset();
  server = ControlServer::Start(path, [](const Json&) { return Json{{"error", "nope"}}; });
  ASSERT_TRUE(server.has_value());
  auto e = ControlCall(path, {{"command", "x"}});
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message(), HasSubstr("nope"));
}

TEST(ControlTest, NoServerIsAClearError) {
  auto e = ControlCall("/nonexistent/moatctl.sock", {{"command", "status"}});
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message(), HasSubstr("moatd is not running"));
}

TEST(ControlTest, RefusesToReplaceARegularFile) {
  auto dir = TempDir::Create("moat-control");
  ASSERT_TRUE(dir.has_value());
  const auto path = dir->path() / "sock";
  ASSERT_TRUE(AtomicWriteFile(path, "precious").has_value());
  auto server = ControlServer::Start(path, [](const Json&) { return Json::object(); });
  ASSERT_FALSE(server.has_value());
  EXPECT_EQ(*ReadFile(path, 100), "precious");
}

}  // namespace
}  // namespace moat::device::agent
