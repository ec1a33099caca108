#include "store/migration.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moat::store {
namespace {

using ::testing::HasSubstr;

const Migration kOne{1, "create_a", "CREATE TABLE a (id TEXT PRIMARY KEY)"};
const Migration kTwo{2, "create_b", "CREATE TABLE b (id TEXT PRIMARY KEY)"};
const Migration kFive{5, "create_c", "CREATE TABLE c (id TEXT PRIMARY KEY)"};

AppliedMigration Applied(const Migration& m) {
  return {m.version, std::string(m.name), MigrationChecksum(m.sql)};
}

TEST(MigrationTest, ChecksumIsFnv1a64OfTheSql) {
  EXPECT_EQ(MigrationChecksum(""), "fnv1a64:cbf29ce484222325");
  EXPECT_EQ(MigrationChecksum("a"), "fnv1a64:af63dc4c8601ec8c");
  EXPECT_NE(MigrationChecksum(kOne.sql), MigrationChecksum(kTwo.sql));
}

TEST(MigrationTest, CheckSortsAndValidates) {
  const Migration list[] = {kFive, kOne, kTwo};
  auto sorted = CheckMigrations(list);
  ASSERT_TRUE(sorted);
  ASSERT_EQ(sorted->size(), 3u);
  EXPECT_EQ((*sorted)[0].version, 1);
  EXPECT_EQ((*sorted)[2].version, 5);

  struct Bad {
    Migration m;
    const char* needle;
  };
  const Bad bad[] = {
      {{0, "zero", "SELECT 1"}, "version must be > 0"},
      {{2, "twice", "SELECT 1"}, "version used twice"},
      {{3, "", "SELECT 1"}, "name is empty"},
      {{3, "empty", " -- nothing\n"}, "no SQL statements"},
      {{3, "autoinc", "CREATE TABLE d (id INTEGER PRIMARY KEY AUTOINCREMENT)"},
       "migration 3 (\"autoinc\"): not portable SQL: INTEGER"},
      {{3, "open", "CREATE TABLE d (x TEXT DEFAULT 'x)"}, "unterminated string literal"},
  };
  for (const Bad& b : bad) {
    const Migration with[] = {kOne, kTwo, b.m};
    auto r = CheckMigrations(with);
    ASSERT_FALSE(r) << b.needle;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(r.error().message(), HasSubstr(b.needle));
  }
}

TEST(MigrationTest, PendingAreTheUnappliedOnesInOrder) {
  const Migration known[] = {kOne, kTwo, kFive};
  auto all = PendingMigrations({}, known);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 3u);
  const AppliedMigration applied[] = {Applied(kOne), Applied(kTwo)};
  auto rest = PendingMigrations(applied, known);
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ(rest->front().version, 5);
}

TEST(MigrationTest, RefusesANewerDatabase) {
  const Migration known[] = {kOne, kTwo, kFive};
  const AppliedMigration applied[] = {Applied(kOne), {7, "from_the_future", "fnv1a64:0"}};
  auto r = PendingMigrations(applied, known);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.error().message(),
            "database schema version 7 is newer than this moat-service (5); upgrade moat-service");
}

TEST(MigrationTest, RefusesChangedUnknownAndOutOfOrderMigrations) {
  const Migration known[] = {kOne, kTwo, kFive};
  const Migration edited{2, "create_b", "CREATE TABLE b (id TEXT PRIMARY KEY, x TEXT)"};
  const AppliedMigration changed[] = {Applied(kOne), Applied(edited)};
  auto r = PendingMigrations(changed, known);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(r.error().message(), HasSubstr("migration 2 was applied as \"create_b\""));
  EXPECT_THAT(r.error().message(), HasSubstr("must never change"));

  const AppliedMigration renamed[] = {{1, "old_name", MigrationChecksum(kOne.sql)}};
  EXPECT_FALSE(PendingMigrations(renamed, known));

  const AppliedMigration unknown[] = {Applied(kOne), {3, "dropped", "fnv1a64:0"}};
  r = PendingMigrations(unknown, known);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("records migration 3 (\"dropped\")"));

  const AppliedMigration skipped[] = {Applied(kOne), Applied(kFive)};
  r = PendingMigrations(skipped, known);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("migration 2 (\"create_b\") is older than"));
}

}  // namespace
}  // namespace moat::store
