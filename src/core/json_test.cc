#include "core/json.h"

#include <gtest/gtest.h>

namespace moat {
namespace {

TEST(JsonTest, ParsesNestedValues) {
  auto j = ParseJson(R"({"a":[1,2,{"b":true}],"c":"x","d":null,"e":-1.5})", "doc");
  ASSERT_TRUE(j) << j.error().message();
  EXPECT_EQ((*j)["a"][2]["b"], true);
  EXPECT_EQ((*j)["c"], "x");
  EXPECT_TRUE((*j)["d"].is_null());
  EXPECT_EQ((*j)["e"], -1.5);
}

TEST(JsonTest, RejectsDuplicateKeysNamingThePath) {
  auto j = ParseJson(R"({"Capabilities":{"Gpio":[1],"Gpio":[2]}})", "manifest");
  ASSERT_FALSE(j);
  EXPECT_EQ(j.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(j.error().message(), "manifest: invalid JSON: duplicate key 'Capabilities.Gpio'");
  auto in_array = ParseJson(R"({"a":[{"x":1},{"x":1,"x":2}]})", "doc");
  ASSERT_FALSE(in_array);
  EXPECT_EQ(in_array.error().message(), "doc: invalid JSON: duplicate key 'a[1].x'");
  // The same key in sibling objects is fine.
  EXPECT_TRUE(ParseJson(R"({"a":{"x":1},"b":{"x":1}})", "doc"));
}

TEST(JsonTest, EnforcesSizeAndDepthLimits) {
  auto big = ParseJson(std::string(100, ' ') + "1", "doc", JsonLimits{.max_bytes = 50});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(big.error().message(), "doc: 101 bytes exceeds the limit of 50 bytes");

  std::string deep = std::string(10, '[') + std::string(10, ']');
  EXPECT_TRUE(ParseJson(deep, "doc", JsonLimits{.max_depth = 10}));
  auto too_deep = ParseJson(deep, "doc", JsonLimits{.max_depth = 9});
  ASSERT_FALSE(too_deep);
  EXPECT_EQ(too_deep.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(too_deep.error().message(), "doc: invalid JSON: nesting deeper than 9 levels");
  // A million brackets must not blow the stack.
  EXPECT_FALSE(ParseJson(std::string(1000000, '['), "doc", JsonLimits{.max_bytes = 2000000}));
}

TEST(JsonTest, RejectsMalformedInput) {
  for (const char* bad :
       {"", "{", "{\"a\":}", "[1,]", "{'a':1}", "tru", "1 2", "\"\xff\"", "{\"a\":1,}", "NaN"}) {
    auto j = ParseJson(bad, "doc");
    EXPECT_FALSE(j) << bad;
    if (!j) {
      EXPECT_EQ(j.error().code(), ErrorCode::kInvalidArgument);
      EXPECT_TRUE(j.error().message().starts_with("doc: invalid JSON: ")) << j.error().message();
    }
  }
}

TEST(JsonTest, TypeNamesAndPaths) {
  EXPECT_EQ(JsonTypeName(Json(1)), "integer");
  EXPECT_EQ(JsonTypeName(Json("s")), "string");
  EXPECT_EQ(JsonTypeName(Json::array()), "array");
  EXPECT_EQ(JsonPathIndex(JsonPathJoin("Capabilities", "Gpio"), 2), "Capabilities.Gpio[2]");
}

}  // namespace
}  // namespace moat
