#include "store/sqlite.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <cmath>
#include <future>
#include <limits>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file.h"

namespace moat::store {
namespace {

using ::testing::HasSubstr;

constexpr Migration kSchema[] = {
    {1, "create_tenants",
     "CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);\n"
     "INSERT INTO tenants (id, name) VALUES ('system', 'System')"},
    {2, "create_devices",
     "CREATE TABLE devices (\n"
     "  id TEXT PRIMARY KEY,\n"
     "  tenant_id TEXT NOT NULL REFERENCES tenants (id),\n"
     "  seen_at BIGINT,\n"
     "  CONSTRAINT seen_at_not_negative CHECK (seen_at >= 0));\n"
     "CREATE INDEX devices_by_tenant ON devices (tenant_id);"},
    {3, "create_values_and_counters",
     "CREATE TABLE vals (k BIGINT PRIMARY KEY, v BLOB);"
     "CREATE TABLE counters (name TEXT PRIMARY KEY, n BIGINT NOT NULL);"
     "INSERT INTO counters (name, n) VALUES ('writes', 0)"},
};

// Direct access to the file for checks the Database interface deliberately cannot make.
class RawDb {
 public:
  explicit RawDb(const std::filesystem::path& path) {
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  // The first column of the first row as text ("" if none), or "error: ..." on failure.
  std::string Scalar(const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) {
      return std::string("error: ") + sqlite3_errmsg(db_);
    }
    std::string out;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      out = text != nullptr ? reinterpret_cast<const char*>(text) : "NULL";
    } else if (rc != SQLITE_DONE) {
      out = std::string("error: ") + sqlite3_errmsg(db_);
    }
    sqlite3_finalize(stmt);
    return out;
  }
  int Exec(const char* sql) { return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr); }

 private:
  sqlite3* db_ = nullptr;
};

// For bodies whose last step is an Execute whose count does not matter.
Result<void> Discard(Result<int64_t> r) {
  if (!r) return Fail(std::move(r).error());
  return Ok();
}

int64_t Count(Database& db, const char* table) {
  auto row = db.QueryOne(std::string("SELECT count(*) FROM ") + table);
  EXPECT_TRUE(row) << row.error().message();
  return row ? *row->Int(0) : -1;
}

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("moat-store-test");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    path_ = dir_->path() / "moat.db";
  }

  SqliteOptions Options() const {
    SqliteOptions options;
    options.path = path_;
    return options;
  }

  std::unique_ptr<Database> Open(std::span<const Migration> migrations = kSchema) {
    auto db = OpenSqlite(Options(), migrations);
    EXPECT_TRUE(db) << db.error().message();
    return db ? std::move(*db) : nullptr;
  }

  std::optional<TempDir> dir_;
  std::filesystem::path path_;
};

TEST_F(SqliteTest, MigrationsApplyOnceAndAreRecorded) {
  {
    auto db = Open();
    ASSERT_TRUE(db);
    EXPECT_EQ(db->backend(), "sqlite");
    auto rows = db->Query("SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    ASSERT_TRUE(rows) << rows.error().message();
    ASSERT_EQ(rows->size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(*(*rows)[i].Int(0), kSchema[i].version);
      EXPECT_EQ(*(*rows)[i].Text(1), kSchema[i].name);
      EXPECT_THAT(*(*rows)[i].Text(2), HasSubstr("fnv1a64:"));
    }
    EXPECT_EQ(Count(*db, "tenants"), 1);
  }
  // Reopening applies nothing again (migration 1's INSERT would fail on the second run).
  for (int i = 0; i < 2; ++i) {
    auto db = Open();
    ASSERT_TRUE(db);
    EXPECT_EQ(Count(*db, "tenants"), 1);
    EXPECT_EQ(Count(*db, "schema_migrations"), 3);
  }
  RawDb raw(path_);
  EXPECT_EQ(raw.Scalar("PRAGMA journal_mode"), "wal");
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(SqliteTest, StampsAppliedAtFromTheInjectedClock) {
  FakeClock clock(std::chrono::system_clock::from_time_t(1'700'000'000));
  SqliteOptions options = Options();
  options.clock = &clock;
  auto db = OpenSqlite(options, kSchema);
  ASSERT_TRUE(db) << db.error().message();
  auto row = (*db)->QueryOne("SELECT min(applied_at), max(applied_at) FROM schema_migrations");
  ASSERT_TRUE(row) << row.error().message();
  EXPECT_EQ(*row->Int(0), 1'700'000'000);
  EXPECT_EQ(*row->Int(1), 1'700'000'000);
}

TEST(UnixSecondsTest, RoundsTowardsThePast) {
  EXPECT_EQ(UnixSeconds(FromUnixSeconds(1'700'000'000)), 1'700'000'000);
  EXPECT_EQ(UnixSeconds(FromUnixSeconds(1) + std::chrono::milliseconds(999)), 1);
  EXPECT_EQ(UnixSeconds(FromUnixSeconds(0) - std::chrono::milliseconds(1)), -1);
}

TEST_F(SqliteTest, AddedMigrationsApplyOnReopen) {
  ASSERT_TRUE(Open(std::span(kSchema).first(1)));
  auto db = Open();
  ASSERT_TRUE(db);
  EXPECT_EQ(Count(*db, "schema_migrations"), 3);
  EXPECT_EQ(Count(*db, "counters"), 1);
}

TEST_F(SqliteTest, RefusesADatabaseNewerThanItsMigrations) {
  ASSERT_TRUE(Open());
  auto older = OpenSqlite(Options(), std::span(kSchema).first(2));
  ASSERT_FALSE(older);
  EXPECT_EQ(older.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(older.error().message(),
            path_.string() +
                ": database schema version 3 is newer than this moat-service (2); upgrade "
                "moat-service");
}

TEST_F(SqliteTest, RefusesAChangedMigration) {
  ASSERT_TRUE(Open());
  Migration changed[] = {kSchema[0], kSchema[1], kSchema[2]};
  changed[1].sql = "CREATE TABLE devices (id TEXT PRIMARY KEY)";
  auto db = OpenSqlite(Options(), changed);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(db.error().message(), HasSubstr("migration 2 was applied as \"create_devices\""));
}

TEST_F(SqliteTest, AFailedMigrationIsRolledBackAndNotRecorded) {
  const Migration broken[] = {
      kSchema[0],
      {2, "broken",
       "CREATE TABLE half (a TEXT);\n"
       "INSERT INTO missing_table (a) VALUES ('x')"},
  };
  auto db = OpenSqlite(Options(), broken);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code(), ErrorCode::kInternal);
  EXPECT_THAT(db.error().message(), HasSubstr("migration 2 (\"broken\")"));
  EXPECT_THAT(db.error().message(), HasSubstr("no such table: missing_table"));
  {
    RawDb raw(path_);
    EXPECT_EQ(raw.Scalar("SELECT group_concat(version) FROM schema_migrations"), "1");
    EXPECT_EQ(raw.Scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'half'"), "0");
  }
  // Fixed, it applies.
  auto fixed = Open();
  ASSERT_TRUE(fixed);
  EXPECT_EQ(Count(*fixed, "schema_migrations"), 3);
}

TEST_F(SqliteTest, RefusesAFileThatIsNotADatabase) {
  ASSERT_TRUE(AtomicWriteFile(path_, std::string(4096, 'x')));
  auto db = OpenSqlite(Options(), kSchema);
  ASSERT_FALSE(db);
  EXPECT_THAT(db.error().message(), HasSubstr(path_.string()));
  EXPECT_THAT(db.error().message(), HasSubstr("file is not a database"));
}

TEST_F(SqliteTest, APathIsAlwaysAFileNeverAUri) {
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_->path());
  SqliteOptions options;
  options.path = "file:odd.db?mode=memory";
  auto db = OpenSqlite(options, kSchema);
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(db) << db.error().message();
  EXPECT_TRUE(std::filesystem::exists(dir_->path() / "file:odd.db?mode=memory"));
}

TEST_F(SqliteTest, ValidatesOptions) {
  SqliteOptions options = Options();
  options.pool_size = 0;
  auto db = OpenSqlite(options, kSchema);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(db.error().message(), HasSubstr("pool_size 0"));
  options = Options();
  options.max_attempts = 0;
  EXPECT_FALSE(OpenSqlite(options, kSchema));
  EXPECT_FALSE(OpenSqlite(SqliteOptions{}, kSchema));
}

TEST_F(SqliteTest, TransactCommits) {
  auto db = Open();
  ASSERT_TRUE(db);
  auto r = db->Transact([](Session& s) -> Result<void> {
    MOAT_TRY(s.Execute("INSERT INTO tenants (id, name) VALUES (?, ?)", {"t1", "Tenant One"}));
    MOAT_TRY(s.Execute("INSERT INTO devices (id, tenant_id, seen_at) VALUES (?, ?, ?)",
                       {"d1", "t1", int64_t{5}}));
    // A transaction sees its own writes.
    MOAT_ASSIGN_OR_RETURN(Row row, s.QueryOne("SELECT count(*) FROM devices"));
    EXPECT_EQ(*row.Int(0), 1);
    return Ok();
  });
  ASSERT_TRUE(r) << r.error().message();
  auto row = db->QueryOne(
      "SELECT d.id, t.name, d.seen_at FROM devices d JOIN tenants t "
      "ON t.id = d.tenant_id WHERE d.id = ?",
      {"d1"});
  ASSERT_TRUE(row) << row.error().message();
  EXPECT_EQ(*row->Text(1), "Tenant One");
  EXPECT_EQ(*row->Int(2), 5);
}

TEST_F(SqliteTest, RollsBackWhenTheBodyFailsAfterWriting) {
  auto db = Open();
  ASSERT_TRUE(db);
  int runs = 0;
  auto r = db->Transact([&](Session& s) -> Result<void> {
    ++runs;
    MOAT_TRY(s.Execute("INSERT INTO tenants (id, name) VALUES (?, ?)", {"t1", "One"}));
    MOAT_TRY(s.Execute("UPDATE counters SET n = n + 1"));
    return Fail(ErrorCode::kVerificationFailed, "evidence for d1 did not verify");
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(runs, 1);  // an error of the body's own is not retried
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(r.error().message(), "evidence for d1 did not verify");
  EXPECT_EQ(Count(*db, "tenants"), 1);
  EXPECT_EQ(*db->QueryOne("SELECT n FROM counters")->Int(0), 0);
  // The connection is usable afterwards.
  EXPECT_TRUE(db->Transact([](Session& s) -> Result<void> {
    return Discard(s.Execute("INSERT INTO tenants (id, name) VALUES (?, ?)", {"t1", "One"}));
  }));
  EXPECT_EQ(Count(*db, "tenants"), 2);
}

// Runs `sql` with `params` in a transaction after inserting a tenant, and returns the error.
Error ConstraintError(Database& db, const char* sql, std::initializer_list<Value> params) {
  std::vector<Value> values(params);
  auto r = db.Transact([&](Session& s) -> Result<void> {
    MOAT_TRY(s.Execute("INSERT INTO tenants (id, name) VALUES ('t9', 'Nine')"));
    MOAT_TRY(s.Execute(sql, std::span<const Value>(values)));
    return Ok();
  });
  EXPECT_FALSE(r) << sql;
  EXPECT_EQ(Count(db, "tenants"), 1) << "not rolled back: " << sql;
  return r ? Error(ErrorCode::kInternal, "no error") : r.error();
}

TEST_F(SqliteTest, ConstraintViolationsMapToCodesNamingTheConstraint) {
  auto db = Open();
  ASSERT_TRUE(db);
  Error e = ConstraintError(*db, "INSERT INTO tenants (id, name) VALUES (?, ?)", {"system", "X"});
  EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(e.message(), HasSubstr("UNIQUE constraint failed: tenants.id"));
  EXPECT_THAT(e.message(), HasSubstr("(in: INSERT INTO tenants (id, name) VALUES (?, ?))"));

  e = ConstraintError(*db, "INSERT INTO tenants (id, name) VALUES (?, ?)", {"t2", "System"});
  EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(e.message(), HasSubstr("UNIQUE constraint failed: tenants.name"));

  e = ConstraintError(*db, "INSERT INTO devices (id, tenant_id) VALUES (?, ?)", {"d1", "nope"});
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.message(), HasSubstr("FOREIGN KEY constraint failed"));

  e = ConstraintError(*db, "INSERT INTO devices (id, tenant_id, seen_at) VALUES (?, ?, ?)",
                      {"d1", "system", int64_t{-1}});
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(e.message(), HasSubstr("CHECK constraint failed: seen_at_not_negative"));

  e = ConstraintError(*db, "INSERT INTO devices (id, tenant_id) VALUES (?, ?)", {"d1", kNull});
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(e.message(), HasSubstr("NOT NULL constraint failed: devices.tenant_id"));

  // Deleting a referenced row is refused too.
  ASSERT_TRUE(db->Transact([](Session& s) -> Result<void> {
    return Discard(s.Execute("INSERT INTO devices (id, tenant_id) VALUES ('d1', 'system')"));
  }));
  e = ConstraintError(*db, "DELETE FROM tenants WHERE id = ?", {"system"});
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
}

TEST_F(SqliteTest, AFailedCallAbortsTheTransactionEvenIfTheBodyIgnoresIt) {
  auto db = Open();
  ASSERT_TRUE(db);
  auto r = db->Transact([](Session& s) -> Result<void> {
    MOAT_TRY(s.Execute("INSERT INTO tenants (id, name) VALUES ('t1', 'One')"));
    auto dup = s.Execute("INSERT INTO tenants (id, name) VALUES ('t1', 'Again')");
    EXPECT_EQ(dup.error().code(), ErrorCode::kAlreadyExists);
    auto next = s.Query("SELECT count(*) FROM tenants");
    EXPECT_FALSE(next);
    EXPECT_EQ(next.error().code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(next.error().message(), HasSubstr("transaction aborted by an earlier error"));
    return Ok();  // swallowed
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(Count(*db, "tenants"), 1);
}

TEST_F(SqliteTest, ExecuteReturnsRowsAffected) {
  auto db = Open();
  ASSERT_TRUE(db);
  auto r = db->Transact([](Session& s) -> Result<void> {
    for (const char* id : {"a", "b", "c"}) {
      EXPECT_EQ(*s.Execute("INSERT INTO tenants (id, name) VALUES (?, ?)", {id, id}), 1);
    }
    EXPECT_EQ(*s.Execute("INSERT INTO tenants (id, name) VALUES ('a', 'z') "
                         "ON CONFLICT (id) DO NOTHING"),
              0);
    EXPECT_EQ(*s.Execute("UPDATE tenants SET name = name || '!' WHERE id <> 'system'"), 3);
    // Statements that change no rows report 0, not the previous statement's count.
    EXPECT_EQ(*s.Execute("CREATE TABLE extra (x TEXT)"), 0);
    EXPECT_EQ(*s.Execute("SELECT * FROM tenants"), 0);
    EXPECT_EQ(*s.Execute("DELETE FROM tenants WHERE id = 'nobody'"), 0);
    EXPECT_EQ(*s.Execute("WITH doomed AS (SELECT id FROM tenants WHERE id IN ('a', 'b')) "
                         "DELETE FROM tenants WHERE id IN (SELECT id FROM doomed)"),
              2);
    MOAT_ASSIGN_OR_RETURN(auto rows, s.Query("INSERT INTO tenants (id, name) VALUES ('d', 'D') "
                                             "RETURNING id, name"));
    EXPECT_EQ(rows.size(), 1u);
    EXPECT_EQ(*rows[0].Text(1), "D");
    return Ok();
  });
  ASSERT_TRUE(r) << r.error().message();
}

TEST_F(SqliteTest, ValuesRoundTrip) {
  auto db = Open();
  ASSERT_TRUE(db);
  std::vector<uint8_t> big(1 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  const std::vector<Value> values = {
      kNull,
      int64_t{0},
      int64_t{-1},
      std::numeric_limits<int64_t>::min(),
      std::numeric_limits<int64_t>::max(),
      3.25,
      -0.0,
      std::numeric_limits<double>::max(),
      std::numeric_limits<double>::infinity(),
      std::string(),
      std::string("h\xC3\xA9llo \xE2\x9C\x93 \xF0\x9D\x84\x9E"),  // é ✓ 𝄞
      std::string("123"),  // stays text: the column has no numeric affinity
      std::vector<uint8_t>(),
      std::vector<uint8_t>{0, 1, 0, 255},
      big,
  };
  ASSERT_TRUE(db->Transact([&](Session& s) -> Result<void> {
    for (size_t i = 0; i < values.size(); ++i) {
      MOAT_TRY(
          s.Execute("INSERT INTO vals (k, v) VALUES (?, ?)", {static_cast<int64_t>(i), values[i]}));
    }
    return Ok();
  }));
  for (size_t i = 0; i < values.size(); ++i) {
    auto row = db->QueryOne("SELECT v FROM vals WHERE k = ?", {static_cast<int64_t>(i)});
    ASSERT_TRUE(row) << row.error().message();
    EXPECT_EQ(row->at(0), values[i]) << "value " << i;
  }
  auto empty_blob = db->QueryOne("SELECT v FROM vals WHERE k = 12");
  ASSERT_TRUE(empty_blob);
  EXPECT_FALSE(empty_blob->IsNull(0));
  EXPECT_TRUE(empty_blob->Blob(0)->empty());
  EXPECT_TRUE(
      std::signbit(std::get<double>(db->QueryOne("SELECT v FROM vals WHERE k = 6")->at(0))));
}

TEST_F(SqliteTest, RowAccessorsAreStrict) {
  auto db = Open();
  ASSERT_TRUE(db);
  auto row = db->QueryOne("SELECT id, NULL, 7, 1.5 FROM tenants");
  ASSERT_TRUE(row) << row.error().message();
  EXPECT_EQ(*row->Text(0), "system");
  EXPECT_TRUE(row->IsNull(1));
  EXPECT_EQ(*row->Int(2), 7);
  EXPECT_EQ(*row->Double(3), 1.5);
  auto wrong = row->Int(0);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kInternal);
  EXPECT_EQ(wrong.error().message(), "column 0: expected integer, found text");
  EXPECT_EQ(row->Text(1).error().message(), "column 1: expected text, found NULL");
  EXPECT_FALSE(row->Double(2));  // no silent conversions
  EXPECT_EQ(row->Blob(9).error().message(), "column 9 out of range (row has 4 columns)");
}

TEST_F(SqliteTest, RefusesValuesThatDifferBetweenEngines) {
  auto db = Open();
  ASSERT_TRUE(db);
  struct Bad {
    Value value;
    const char* needle;
  };
  const Bad bad[] = {
      {std::string("a\0b", 3), "parameter 2: text holds a NUL byte at offset 1"},
      {std::string("ab\xFF"), "parameter 2: text is not valid UTF-8 at offset 2"},
      {std::string("\xC0\x80"), "not valid UTF-8 at offset 0"},      // overlong NUL
      {std::string("\xED\xA0\x80"), "not valid UTF-8 at offset 0"},  // surrogate
      {std::string("\xF4\x90\x80\x80"), "not valid UTF-8"},          // above U+10FFFF
      {std::string("\xE2\x9C"), "not valid UTF-8"},                  // truncated
      {std::nan(""), "parameter 2: NaN"},
  };
  for (const Bad& b : bad) {
    auto r = db->Transact([&](Session& s) -> Result<void> {
      return Discard(s.Execute("INSERT INTO vals (k, v) VALUES (?, ?)", {int64_t{1}, b.value}));
    });
    ASSERT_FALSE(r) << b.needle;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(r.error().message(), HasSubstr(b.needle));
    EXPECT_THAT(r.error().message(), HasSubstr("INSERT INTO vals"));
  }
  EXPECT_EQ(Count(*db, "vals"), 0);
}

TEST_F(SqliteTest, RefusesMisusedStatements) {
  auto db = Open();
  ASSERT_TRUE(db);
  struct Case {
    const char* sql;
    std::vector<Value> params;
    ErrorCode code;
    const char* needle;
  };
  const Case cases[] = {
      {"SELECT * FROM tenants WHERE id = ?",
       {},
       ErrorCode::kInvalidArgument,
       "statement has 1 placeholders but 0 values were given"},
      {"SELECT * FROM tenants", {"x"}, ErrorCode::kInvalidArgument, "has 0 placeholders but 1"},
      {"SELECT 1; SELECT 2", {}, ErrorCode::kInvalidArgument, "expected one statement, found 2"},
      {"  -- nothing", {}, ErrorCode::kInvalidArgument, "expected one statement, found 0"},
      {"SELECT rowid FROM tenants", {}, ErrorCode::kInvalidArgument, "not portable SQL: rowid"},
      {"INSERT INTO tenants (id, name) VALUES ('a', 'b')",
       {},
       ErrorCode::kInvalidArgument,
       "Database::Query is read-only"},
      {"SELEC 1", {}, ErrorCode::kInternal, "syntax error"},
      {"SELECT * FROM nowhere", {}, ErrorCode::kInternal, "no such table: nowhere"},
      {"SELECT \"system\" FROM tenants", {}, ErrorCode::kInternal, "no such column: system"},
  };
  for (const Case& c : cases) {
    auto r = db->Query(c.sql, c.params);
    ASSERT_FALSE(r) << c.sql;
    EXPECT_EQ(r.error().code(), c.code) << c.sql << ": " << r.error().message();
    EXPECT_THAT(r.error().message(), HasSubstr(c.needle)) << c.sql;
  }
  auto none = db->QueryOne("SELECT id FROM tenants WHERE id = ?", {"nobody"});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(db->Transact([](Session& s) -> Result<void> {
    return Discard(s.Execute("INSERT INTO tenants (id, name) VALUES ('t2', 'Two')"));
  }));
  auto two = db->QueryOne("SELECT id FROM tenants");
  ASSERT_FALSE(two);
  EXPECT_EQ(two.error().code(), ErrorCode::kInternal);
  EXPECT_THAT(two.error().message(), HasSubstr("expected one row, got 2"));
}

TEST_F(SqliteTest, RefusesNestedUseInsideABody) {
  auto db = Open();
  ASSERT_TRUE(db);
  auto r = db->Transact([&](Session&) -> Result<void> {
    auto nested = db->Transact([](Session&) { return Ok(); });
    EXPECT_FALSE(nested);
    EXPECT_EQ(nested.error().code(), ErrorCode::kFailedPrecondition);
    auto outside = db->Query("SELECT 1");
    EXPECT_FALSE(outside);
    EXPECT_EQ(outside.error().code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(outside.error().message(), HasSubstr("use the Session"));
    return Ok();
  });
  EXPECT_TRUE(r) << r.error().message();
  // A body may use another database.
  SqliteOptions other = Options();
  other.path = dir_->path() / "other.db";
  auto db2 = OpenSqlite(other, kSchema);
  ASSERT_TRUE(db2);
  r = db->Transact([&](Session&) -> Result<void> {
    MOAT_TRY((*db2)->Query("SELECT 1"));
    return (*db2)->Transact([](Session&) { return Ok(); });
  });
  EXPECT_TRUE(r) << r.error().message();
}

TEST_F(SqliteTest, LimitsTheRowsAQueryReturns) {
  SqliteOptions options = Options();
  options.max_rows = 5;
  auto db = OpenSqlite(options, kSchema);
  ASSERT_TRUE(db);
  ASSERT_TRUE((*db)->Transact([](Session& s) -> Result<void> {
    for (int64_t i = 0; i < 6; ++i) {
      MOAT_TRY(s.Execute("INSERT INTO vals (k) VALUES (?)", {i}));
    }
    return Ok();
  }));
  EXPECT_TRUE((*db)->Query("SELECT k FROM vals LIMIT 5"));
  auto all = (*db)->Query("SELECT k FROM vals");
  ASSERT_FALSE(all);
  EXPECT_EQ(all.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_THAT(all.error().message(), HasSubstr("more than 5 rows"));
}

TEST_F(SqliteTest, ConcurrentWritersAllLand) {
  auto db = Open();
  ASSERT_TRUE(db);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 200;
  std::atomic<int> failures{0};
  std::atomic<bool> writing{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = db->Transact([&](Session& s) -> Result<void> {
          // Read-modify-write: lost updates would show in the final count.
          MOAT_ASSIGN_OR_RETURN(Row row,
                                s.QueryOne("SELECT n FROM counters WHERE name = ?", {"writes"}));
          MOAT_ASSIGN_OR_RETURN(int64_t n, row.Int(0));
          MOAT_TRY(s.Execute("UPDATE counters SET n = ? WHERE name = ?", {n + 1, "writes"}));
          MOAT_TRY(s.Execute("INSERT INTO vals (k, v) VALUES (?, ?)",
                             {int64_t{t} * 1000 + i, fmt::format("thread {} txn {}", t, i)}));
          return Ok();
        });
        if (!r) {
          ADD_FAILURE() << r.error().message();
          ++failures;
        }
      }
    });
  }
  // Readers run alongside and always see a consistent state.
  std::thread reader([&] {
    while (writing) {
      auto row = db->QueryOne(
          "SELECT (SELECT n FROM counters WHERE name = 'writes'), (SELECT count(*) FROM vals)");
      if (!row) {
        ADD_FAILURE() << row.error().message();
        break;
      }
      EXPECT_EQ(*row->Int(0), *row->Int(1));
    }
  });
  for (auto& th : threads) th.join();
  writing = false;
  reader.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(Count(*db, "vals"), kThreads * kPerThread);
  EXPECT_EQ(*db->QueryOne("SELECT n FROM counters")->Int(0), kThreads * kPerThread);
}

TEST_F(SqliteTest, ReadersDoNotWaitForAWriter) {
  auto db = Open();
  ASSERT_TRUE(db);
  std::promise<void> read_done;
  std::thread writer([&] {
    auto r = db->Transact([&](Session& s) -> Result<void> {
      MOAT_TRY(s.Execute("INSERT INTO tenants (id, name) VALUES ('t1', 'One')"));
      read_done.get_future().wait();  // holds the write transaction open until the read is done
      return Ok();
    });
    EXPECT_TRUE(r) << r.error().message();
  });
  // Sees the last committed state, not the open transaction's write.
  EXPECT_EQ(Count(*db, "tenants"), 1);
  read_done.set_value();
  writer.join();
  EXPECT_EQ(Count(*db, "tenants"), 2);
}

TEST_F(SqliteTest, RetriesWhileAnotherProcessHoldsTheWriteLock) {
  SqliteOptions options = Options();
  options.busy_timeout = std::chrono::milliseconds(20);
  options.max_attempts = 2;
  auto db = OpenSqlite(options, kSchema);
  ASSERT_TRUE(db);
  SqliteOptions patient = options;
  patient.max_attempts = 20;
  auto db2 = OpenSqlite(patient, kSchema);
  ASSERT_TRUE(db2);

  RawDb other(path_);  // stands in for another process, e.g. the sqlite3 shell
  ASSERT_EQ(other.Exec("BEGIN IMMEDIATE"), SQLITE_OK);
  int runs = 0;
  auto body = [&](Session& s) -> Result<void> {
    ++runs;
    return Discard(s.Execute("UPDATE counters SET n = n + 1"));
  };
  auto r = (*db)->Transact(body);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable);
  EXPECT_THAT(r.error().message(), HasSubstr("stayed locked by another connection through 2"));
  EXPECT_EQ(runs, 0);  // the lock is taken before the body runs
  // Readers are not blocked by the other writer.
  EXPECT_EQ(Count(**db, "tenants"), 1);

  // Released while Transact is backing off: a later attempt succeeds.
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(other.Exec("COMMIT"), SQLITE_OK);
  });
  r = (*db2)->Transact(body);
  release.join();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(*(*db2)->QueryOne("SELECT n FROM counters")->Int(0), 1);
}

}  // namespace
}  // namespace moat::store
