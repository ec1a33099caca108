#include "net/http.h"

#include <gtest/gtest.h>

#include "core/json.h"

namespace moat::net {
namespace {

TEST(ProblemTest, IsRfc9457ProblemJson) {
  HttpResponse r = Problem(404, "not-found", "Not Found", "no device 12");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/problem+json");
  auto json = ParseJson(r.body, "problem");
  ASSERT_TRUE(json.has_value());
  EXPECT_EQ((*json)["type"], "urn:moat:problem:not-found");
  EXPECT_EQ((*json)["title"], "Not Found");
  EXPECT_EQ((*json)["status"], 404);
  EXPECT_EQ((*json)["detail"], "no device 12");
}

TEST(ProblemTest, OmitsEmptyDetailAndSurvivesInvalidUtf8) {
  auto json = ParseJson(Problem(500, "internal-error", "Internal Server Error", "").body, "p");
  ASSERT_TRUE(json.has_value());
  EXPECT_FALSE(json->contains("detail"));
  HttpResponse r = Problem(400, "bad", "Bad", std::string("\xff\xfe", 2));
  EXPECT_TRUE(ParseJson(r.body, "problem").has_value()) << r.body;
}

TEST(HttpRequestTest, HeaderLookupIsCaseInsensitiveAndTakesTheFirst) {
  HttpRequest request;
  request.headers = {{"content-type", "application/json"}, {"x-a", "1"}, {"x-a", "2"}};
  EXPECT_EQ(request.Header("Content-Type"), "application/json");
  EXPECT_EQ(request.Header("X-A"), "1");
  EXPECT_EQ(request.Header("missing"), "");
}

}  // namespace
}  // namespace moat::net
