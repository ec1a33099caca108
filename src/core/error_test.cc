#include "core/error.h"

#include <gtest/gtest.h>

namespace moat {
namespace {

Result<int> Half(int v) {
  if (v % 2 != 0) return Fail(ErrorCode::kInvalidArgument, "{} is odd", v);
  return v / 2;
}

Result<int> Quarter(int v) {
  MOAT_ASSIGN_OR_RETURN(int h, Half(v));
  MOAT_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Result<void> CheckEven(int v) {
  MOAT_TRY(Half(v));
  return Ok();
}

TEST(ResultTest, PropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "3 is odd");
  EXPECT_TRUE(CheckEven(4));
  EXPECT_FALSE(CheckEven(5));
}

TEST(ResultTest, ContextIsPrefixed) {
  Error e(ErrorCode::kNotFound, "no such key");
  EXPECT_EQ(e.WithContext("keystore").message(), "keystore: no such key");
  EXPECT_EQ(e.WithContext("keystore").code(), ErrorCode::kNotFound);
  EXPECT_EQ(fmt::format("{}", e), "no such key (not-found)");
}

}  // namespace
}  // namespace moat
