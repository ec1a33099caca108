#include "formats/guid.h"

#include <gtest/gtest.h>

namespace moat::formats {
namespace {

TEST(GuidTest, ParsesEitherCaseAndPrintsLowercase) {
  auto g = Guid::Parse("4C906188-bb3b-4bcf-98a3-9b636450e6b8");
  ASSERT_TRUE(g) << g.error().message();
  EXPECT_EQ(g->ToString(), "4c906188-bb3b-4bcf-98a3-9b636450e6b8");
  EXPECT_FALSE(g->IsNil());
  EXPECT_TRUE(Guid::Parse("00000000-0000-0000-0000-000000000000")->IsNil());
}

TEST(GuidTest, RejectsMalformed) {
  EXPECT_EQ(Guid::Parse("4c906188bb3b4bcf98a39b636450e6b8").error().message(),
            "'4c906188bb3b4bcf98a39b636450e6b8' is not a GUID (expected 36 characters like "
            "01234567-89ab-cdef-0123-456789abcdef)");
  EXPECT_EQ(Guid::Parse("4c906188-bb3b-4bcf-98a3_9b636450e6b8").error().message(),
            "'4c906188-bb3b-4bcf-98a3_9b636450e6b8' is not a GUID (dashes must be at positions "
            "9, 14, 19 and 24)");
  EXPECT_EQ(Guid::Parse("4c90618g-bb3b-4bcf-98a3-9b636450e6b8").error().message(),
            "'4c90618g-bb3b-4bcf-98a3-9b636450e6b8' is not a GUID (non-hexadecimal character)");
  EXPECT_EQ(Guid::Parse("{4c906188-bb3b-4bcf-98a3-9b636450e6}").error().code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace moat::formats
