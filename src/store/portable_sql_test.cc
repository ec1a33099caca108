#include "store/portable_sql.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moat::store {
namespace {

using ::testing::HasSubstr;

TEST(PortableSqlTest, AcceptsTheSubset) {
  const char* accepted[] = {
      "CREATE TABLE IF NOT EXISTS devices ("
      " id TEXT PRIMARY KEY,"
      " tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,"
      " public_key BLOB NOT NULL,"
      " created_at BIGINT NOT NULL,"
      " score DOUBLE PRECISION,"
      " revoked BIGINT NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),"
      " UNIQUE (tenant_id, public_key))",
      "CREATE INDEX IF NOT EXISTS devices_by_tenant ON devices (tenant_id, created_at)",
      "INSERT INTO devices (id, tenant_id) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
      "INSERT INTO devices (id, tenant_id) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING id",
      "INSERT INTO counters (name, n) VALUES (?, 1) "
      "ON CONFLICT (name) DO UPDATE SET n = counters.n + excluded.n",
      "SELECT id, COALESCE(score, 0.5), count(*), max(created_at) FROM devices "
      "WHERE tenant_id = ? AND created_at <> ? GROUP BY id ORDER BY id LIMIT ? OFFSET ?",
      "SELECT CASE WHEN revoked = 1 THEN 'yes' ELSE 'no' END FROM devices",
      "WITH recent AS (SELECT id FROM devices WHERE created_at > ?) "
      "DELETE FROM devices WHERE id IN (SELECT id FROM recent)",
      "SELECT 'AUTOINCREMENT, PRAGMA and it''s ? fine' AS \"INTEGER\" -- PRAGMA ROWID ?\n",
      "/* BEGIN; INSERT OR REPLACE */ SELECT lower(name) || '-' || id FROM t WHERE a != b",
      "UPDATE devices SET score = ? WHERE id = ? RETURNING id, score",
      "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY at LIMIT ?)",
      "SELECT date_created, time_zone FROM t",  // date/time are only rejected as functions
      "ALTER TABLE devices ADD COLUMN note TEXT",
      "SELECT 1.5e-3, .5, 42",
  };
  for (const char* sql : accepted) {
    EXPECT_TRUE(CheckPortableSql(sql)) << sql << ": " << CheckPortableSql(sql).error().message();
  }
}

struct Rejected {
  const char* sql;
  const char* needle;  // must appear in the error message
};

TEST(PortableSqlTest, RejectsEngineSpecificSqlNamingTheWord) {
  const Rejected rejected[] = {
      {"CREATE TABLE t (id BIGINT PRIMARY KEY AUTOINCREMENT)", "AUTOINCREMENT at offset 38"},
      {"CREATE TABLE t (id BIGSERIAL PRIMARY KEY)", "BIGSERIAL"},
      {"CREATE TABLE t (id INTEGER PRIMARY KEY)", "INTEGER at offset 19: 32-bit"},
      {"CREATE TABLE t (n int)", "use BIGINT"},
      {"CREATE TABLE t (x REAL)", "DOUBLE PRECISION"},
      {"CREATE TABLE t (x VARCHAR(10))", "use TEXT"},
      {"CREATE TABLE t (x BOOLEAN)", "0/1"},
      {"SELECT * FROM t WHERE flag = TRUE", "TRUE"},
      {"CREATE TABLE t (x BYTEA)", "write BLOB"},
      {"CREATE TABLE t (x TIMESTAMP)", "unix seconds"},
      {"CREATE TABLE t (x TEXT) WITHOUT ROWID", "WITHOUT"},
      {"CREATE TABLE t (x TEXT) STRICT", "STRICT"},
      {"CREATE TABLE t (x TEXT UNIQUE ON CONFLICT REPLACE)", "conflict clause"},
      {"CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END", "TRIGGER"},
      {"SELECT rowid FROM t", "rowid at offset 7: SQLite-only"},
      {"INSERT OR IGNORE INTO t VALUES (?)", "OR at offset 7"},
      {"INSERT OR REPLACE INTO t VALUES (?)", "ON CONFLICT"},
      {"REPLACE INTO t VALUES (?)", "REPLACE"},
      {"INSERT INTO t VALUES (?) ON CONFLICT DO UPDATE SET x = 1", "conflict target"},
      {"SELECT * FROM t WHERE a == ?", "=="},
      {"SELECT * FROM t WHERE a = ?1", "?1"},
      {"SELECT * FROM t WHERE a = :id", ":id"},
      {"SELECT * FROM t WHERE a = $1", "$1"},
      {"SELECT a::text FROM t", "::text"},
      {"SELECT `a` FROM t", "`"},
      {"SELECT [a] FROM t", "["},
      {"SELECT x'00ff'", "blob literal"},
      {"SELECT * FROM t LIMIT 10, 20", "LIMIT"},
      {"DELETE FROM t WHERE a < ? LIMIT 10", "subquery"},
      {"UPDATE t SET a = 1 ORDER BY b LIMIT 10", "subquery"},
      {"SELECT * FROM t WHERE name GLOB ?", "GLOB"},
      {"SELECT * FROM t WHERE name ILIKE ?", "ILIKE"},
      {"SELECT * FROM t ORDER BY name COLLATE NOCASE", "COLLATE"},
      {"SELECT datetime('now')", "datetime"},
      {"SELECT * FROM t WHERE created_at > strftime('%s', 'now')", "strftime"},
      {"INSERT INTO t (at) VALUES (CURRENT_TIMESTAMP)", "injected Clock"},
      {"SELECT ifnull(a, 0) FROM t", "COALESCE"},
      {"SELECT group_concat(a) FROM t", "group_concat"},
      {"SELECT last_insert_rowid()", "RETURNING"},
      {"SELECT json_extract(doc, '$.a') FROM t", "JSON"},
      {"SELECT max(a, b) FROM t", "two-argument form"},
      {"SELECT greatest(a, b) FROM t", "greatest"},
      {"SELECT randomblob(16)", "injected Random"},
      {"PRAGMA foreign_keys = OFF", "administration"},
      {"BEGIN", "Database::Transact"},
      {"COMMIT", "Database::Transact"},
      {"SELECT 1; ROLLBACK", "Database::Transact"},
      {"SELECT 1 /* a /* nested */ comment */", "nested comment"},
  };
  for (const Rejected& r : rejected) {
    auto result = CheckPortableSql(r.sql);
    ASSERT_FALSE(result) << r.sql;
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument) << r.sql;
    EXPECT_THAT(result.error().message(), HasSubstr(r.needle)) << r.sql;
    EXPECT_THAT(result.error().message(), HasSubstr("not portable SQL")) << r.sql;
  }
}

TEST(PortableSqlTest, RejectsUnterminatedLiteralsAndComments) {
  for (const char* sql : {"SELECT 'abc", "SELECT \"abc", "SELECT /* x"}) {
    auto result = CheckPortableSql(sql);
    ASSERT_FALSE(result) << sql;
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(result.error().message(), HasSubstr("unterminated")) << sql;
    EXPECT_THAT(result.error().message(), HasSubstr("offset 7")) << sql;
  }
}

TEST(PortableSqlTest, SplitsStatementsOutsideLiteralsAndComments) {
  auto parts = SplitStatements(
      "CREATE TABLE a (x TEXT DEFAULT ';');\n"
      "-- a comment; with a semicolon\n"
      ";;  INSERT INTO a (x) VALUES ('1;2') ;\n"
      "SELECT \"a;b\" FROM a");
  ASSERT_TRUE(parts);
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[0], "CREATE TABLE a (x TEXT DEFAULT ';')");
  EXPECT_EQ((*parts)[1], "INSERT INTO a (x) VALUES ('1;2')");
  EXPECT_EQ((*parts)[2], "SELECT \"a;b\" FROM a");
  auto none = SplitStatements("  -- nothing\n ; ");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(SplitStatements("SELECT ';"));
}

TEST(PortableSqlTest, FindsTheMainVerb) {
  EXPECT_EQ(MainVerb("  select 1"), "SELECT");
  EXPECT_EQ(MainVerb("-- c\ninsert into t values (1)"), "INSERT");
  EXPECT_EQ(MainVerb("WITH a (x) AS (SELECT 1), b AS (SELECT 2) UPDATE t SET y = 1"), "UPDATE");
  EXPECT_EQ(MainVerb("WITH a AS (DELETE FROM t RETURNING x) SELECT * FROM a"), "SELECT");
  EXPECT_EQ(MainVerb("CREATE TABLE t (x TEXT)"), "CREATE");
  EXPECT_EQ(MainVerb("   "), "");
}

TEST(PortableSqlTest, NumbersPlaceholdersForPostgres) {
  const char* sql = "SELECT '?', \"?\" FROM t WHERE a = ? -- ?\n AND b IN (?, ?) /* ? */";
  EXPECT_EQ(CountPlaceholders(sql), 3u);
  EXPECT_EQ(NumberPlaceholders(sql),
            "SELECT '?', \"?\" FROM t WHERE a = $1 -- ?\n AND b IN ($2, $3) /* ? */");
  EXPECT_EQ(NumberPlaceholders("SELECT 1"), "SELECT 1");
}

}  // namespace
}  // namespace moat::store
