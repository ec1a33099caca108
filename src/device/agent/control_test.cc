#include "device/agent/control.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdio>

#include "core/file.h"
#include "core/unique_fd.h"

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

TEST(ControlTest, RefusesALiveSocketButReplacesAStaleOne) {
  auto dir = TempDir::Create("moat-control");
  ASSERT_TRUE(dir.has_value());
  const auto path = dir->path() / "moatctl.sock";
  auto first = ControlServer::Start(path, [](const Json&) { return Json{{"who", "first"}}; });
  ASSERT_TRUE(first.has_value()) << first.error().message();
  // A second moatd configured with the same socket must not steal (or, failing later, delete) it.
  auto second = ControlServer::Start(path, [](const Json&) { return Json{{"who", "second"}}; });
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(second.error().message(), HasSubstr("another moatd is listening"));
  auto a = ControlCall(path, {{"command", "status"}});
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ((*a)["who"], "first");
  // A socket file nobody listens on (a moatd killed with SIGKILL) is replaced.
  UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const auto stale_path = dir->path() / "stale.sock";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", stale_path.c_str());
  ASSERT_EQ(::bind(stale.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  stale.Reset();
  auto replaced = ControlServer::Start(stale_path, [](const Json&) {
    return Json{{"who", "new"}};
  });
  ASSERT_TRUE(replaced.has_value()) << replaced.error().message();
  auto b = ControlCall(stale_path, {{"command", "status"}});
  ASSERT_TRUE(b.has_value()) << b.error().message();
  EXPECT_EQ((*b)["who"], "new");
}

}  // namespace
}  // namespace moat::device::agent
