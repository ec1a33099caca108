#include "formats/json_reader.h"

#include <gtest/gtest.h>

namespace moat::formats {
namespace {

TEST(ObjectReaderTest, ReadsAndBoundsFields) {
  Json j = {{"name", "acme"}, {"count", 3}, {"flag", true}};
  ObjectReader r(j, "body");
  ASSERT_TRUE(r.status());
  EXPECT_EQ(*r.RequiredString("name", 10), "acme");
  EXPECT_EQ(*r.RequiredInt("count", 1, 5), 3);
  EXPECT_EQ(*r.OptionalBool("flag", false), true);
  EXPECT_EQ(*r.OptionalString("absent", 10), "");
  EXPECT_FALSE(r.OptionalInt("absent", 0, 1)->has_value());
  EXPECT_TRUE(r.NoOtherFields());
}

TEST(ObjectReaderTest, ErrorsNameTheField) {
  Json j = {{"name", "acme-corporation"}, {"count", 9}, {"flag", "yes"}, {"x", 1}};
  ObjectReader r(j, "tenant");
  EXPECT_EQ(r.RequiredString("name", 4).error().message(), "tenant.name: longer than 4 bytes");
  EXPECT_EQ(r.RequiredInt("count", 1, 5).error().message(), "tenant.count: 9 is out of range 1..5");
  EXPECT_EQ(r.OptionalBool("flag", false).error().message(),
            "tenant.flag: expected boolean, got string");
  EXPECT_EQ(r.RequiredString("role", 4).error().message(),
            "tenant: missing required field 'role'");
  EXPECT_EQ(r.NoOtherFields().error().message(), "tenant: unknown field 'x'");
  EXPECT_EQ(ObjectReader(Json::array(), "tenant").status().error().message(),
            "tenant: expected object, got array");
}

}  // namespace
}  // namespace moat::formats
