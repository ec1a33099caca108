#include "store/sqlite.h"

#include <fcntl.h>
#include <sqlite3.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/file.h"
#include "store/backend.h"
#include "store/migration.h"
#include "store/portable_sql.h"

// RETURNING (3.35), SQLITE_OPEN_EXRESCODE (3.37). Debian 12 ships 3.40.
#if SQLITE_VERSION_NUMBER < 3037000
#error "moat store needs SQLite 3.37 or newer"
#endif

namespace moat::store {
namespace {

struct SqliteCloser {
  // Statements are finalized first (Connection's member order), so close cannot be refused;
  // its result is not actionable here.
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using DbPtr = std::unique_ptr<sqlite3, SqliteCloser>;
using StatementPtr = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

constexpr size_t kStatementCacheSize = 128;
constexpr int kMaxPoolSize = 64;

ErrorCode CodeFor(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return ErrorCode::kAlreadyExists;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return ErrorCode::kFailedPrecondition;
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
      return ErrorCode::kInvalidArgument;
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return ErrorCode::kUnavailable;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
      return ErrorCode::kIo;
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return ErrorCode::kPermissionDenied;
    default:
      return ErrorCode::kInternal;
  }
}

// "UNIQUE constraint failed: devices.id (in: INSERT INTO devices ...)". sqlite3_errmsg names
// the constraint for UNIQUE, PRIMARY KEY, NOT NULL and named CHECK constraints; SQLite does not
// say which FOREIGN KEY failed, so the statement is the best pointer there.
Error StatementError(sqlite3* db, int rc, std::string_view sql) {
  return Error(CodeFor(rc),
               fmt::format("{} (in: {})", sqlite3_errmsg(db), StatementForMessage(sql)));
}

Error ConnectionError(sqlite3* db, int rc, std::string_view what) {
  return Error(CodeFor(rc), fmt::format("{}: {}", what,
                                        db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
}

// Resets a statement and drops its bindings when a run ends, however it ends. Bindings use
// SQLITE_STATIC (no copy): they point into the caller's Values, which outlive the run, and this
// guard clears them before the run returns.
class ResetOnExit {
 public:
  explicit ResetOnExit(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~ResetOnExit() {
    sqlite3_reset(stmt_);  // repeats the last step's error, already reported
    sqlite3_clear_bindings(stmt_);
  }
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

int Bind(sqlite3_stmt* stmt, int index, const Value& value) {
  switch (value.index()) {
    case 0:
      return sqlite3_bind_null(stmt, index);
    case 1:
      return sqlite3_bind_int64(stmt, index, std::get<int64_t>(value));
    case 2:
      return sqlite3_bind_double(stmt, index, std::get<double>(value));
    case 3: {
      const std::string& text = std::get<std::string>(value);
      return sqlite3_bind_text64(stmt, index, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8);
    }
    default: {
      const std::vector<uint8_t>& blob = std::get<std::vector<uint8_t>>(value);
      // A null pointer would bind NULL: an empty blob must stay an empty blob.
      if (blob.empty()) return sqlite3_bind_zeroblob(stmt, index, 0);
      return sqlite3_bind_blob64(stmt, index, blob.data(), blob.size(), SQLITE_STATIC);
    }
  }
}

Result<Row> ReadRow(sqlite3* db, sqlite3_stmt* stmt, std::string_view sql) {
  const int columns = sqlite3_column_count(stmt);
  std::vector<Value> values;
  values.reserve(static_cast<size_t>(columns));
  for (int i = 0; i < columns; ++i) {
    switch (sqlite3_column_type(stmt, i)) {
      case SQLITE_INTEGER:
        values.emplace_back(static_cast<int64_t>(sqlite3_column_int64(stmt, i)));
        break;
      case SQLITE_FLOAT:
        values.emplace_back(sqlite3_column_double(stmt, i));
        break;
      case SQLITE_TEXT: {
        const unsigned char* p = sqlite3_column_text(stmt, i);
        const int n = sqlite3_column_bytes(stmt, i);
        if (p == nullptr && sqlite3_errcode(db) == SQLITE_NOMEM) {
          return Fail(StatementError(db, SQLITE_NOMEM, sql));
        }
        values.emplace_back(std::string(reinterpret_cast<const char*>(p), p ? n : 0));
        break;
      }
      case SQLITE_BLOB: {
        const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt, i));
        const int n = sqlite3_column_bytes(stmt, i);
        if (p == nullptr && n > 0) return Fail(StatementError(db, SQLITE_NOMEM, sql));
        values.emplace_back(std::vector<uint8_t>(p, p == nullptr ? p : p + n));
        break;
      }
      default:
        values.emplace_back(std::monostate{});
        break;
    }
  }
  return Row(std::move(values));
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

enum class Role { kWriter, kReader };
enum class Access { kReadWrite, kReadOnly };
enum class CacheUse { kCache, kNoCache };

// One sqlite3 connection and its prepared-statement cache. Not thread-safe: used by one thread
// at a time (the writer under SqliteDatabase::write_mu_, a reader while leased from the pool).
class Connection {
 public:
  static Result<std::unique_ptr<Connection>> Open(const SqliteOptions& options, Role role);

  Connection(DbPtr db, size_t max_rows) : db_(std::move(db)), max_rows_(max_rows) {}

  sqlite3* db() const { return db_.get(); }
  bool InTransaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }

  // Fixed SQL from this file (BEGIN, COMMIT, PRAGMA): not checked against the portable subset.
  Result<void> ExecTrusted(const char* sql) {
    int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Fail(StatementError(db_.get(), rc, sql));
    return Ok();
  }

  // A PRAGMA's single value as text, to verify that a setting took.
  Result<std::string> PragmaValue(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_.get(), sql, -1, &raw, nullptr);
    StatementPtr stmt(raw);
    if (rc != SQLITE_OK) return Fail(StatementError(db_.get(), rc, sql));
    rc = sqlite3_step(stmt.get());
    if (rc != SQLITE_ROW) return Fail(StatementError(db_.get(), rc, sql));
    const unsigned char* text = sqlite3_column_text(stmt.get(), 0);
    return std::string(text != nullptr ? reinterpret_cast<const char*>(text) : "");
  }

  // Runs one caller-supplied statement. Appends its rows to `rows` (if not null) and returns
  // the number of rows it inserted, updated or deleted.
  Result<int64_t> Run(std::string_view sql, std::span<const Value> params, Access access,
                      CacheUse cache_use, std::vector<Row>* rows);

 private:
  struct Prepared {
    StatementPtr stmt;
    size_t placeholders = 0;
    bool modifies_rows = false;  // INSERT, UPDATE or DELETE: sqlite3_changes64 is its count
  };

  Result<Prepared> Prepare(std::string_view sql, unsigned flags);
  Result<Prepared*> PrepareCached(std::string_view sql);

  // Declared first so that it is destroyed last, after the statements.
  DbPtr db_;
  size_t max_rows_;
  std::unordered_map<std::string, Prepared, StringHash, std::equal_to<>> cache_;
};

Result<void> Configure(sqlite3* db, int option, int value, std::string_view name) {
  int rc = sqlite3_db_config(db, option, value, static_cast<int*>(nullptr));
  if (rc != SQLITE_OK) return Fail(ConnectionError(db, rc, name));
  return Ok();
}

Result<std::unique_ptr<Connection>> Connection::Open(const SqliteOptions& options, Role role) {
  // OpenSqlite created the file with mode 0600, so no SQLITE_OPEN_CREATE: if it vanished since,
  // failing is better than silently starting an empty database. NOMUTEX: we guarantee one thread
  // per connection at a time.
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);  // a handle is returned even on failure and must be closed
  if (rc != SQLITE_OK) return Fail(ConnectionError(db.get(), rc, "open"));
  rc = sqlite3_extended_result_codes(db.get(), 1);
  if (rc != SQLITE_OK) return Fail(ConnectionError(db.get(), rc, "extended result codes"));

  // SECURITY: defensive mode forbids writes to the schema and other ways of corrupting the file
  // through SQL; an untrusted schema may not call functions with side effects; no extensions.
  MOAT_TRY(Configure(db.get(), SQLITE_DBCONFIG_DEFENSIVE, 1, "defensive mode"));
  MOAT_TRY(Configure(db.get(), SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, "trusted_schema"));
  MOAT_TRY(Configure(db.get(), SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, "load_extension"));
  // "x" is an identifier, never a string, as on PostgreSQL.
  MOAT_TRY(Configure(db.get(), SQLITE_DBCONFIG_DQS_DML, 0, "double-quoted strings (DML)"));
  MOAT_TRY(Configure(db.get(), SQLITE_DBCONFIG_DQS_DDL, 0, "double-quoted strings (DDL)"));

  const auto timeout_ms = std::min<int64_t>(options.busy_timeout.count(), INT_MAX);
  rc = sqlite3_busy_timeout(db.get(), static_cast<int>(timeout_ms));
  if (rc != SQLITE_OK) return Fail(ConnectionError(db.get(), rc, "busy timeout"));

  auto conn = std::make_unique<Connection>(std::move(db), options.max_rows);
  if (role == Role::kWriter) {
    // The journal mode is stored in the file; readers opened later use it too.
    MOAT_ASSIGN_OR_RETURN(std::string mode, conn->PragmaValue("PRAGMA journal_mode=WAL"));
    if (mode != "wal") {
      return Fail(ErrorCode::kFailedPrecondition,
                  "cannot use WAL mode (journal_mode stayed \"{}\"; a network file system?)", mode);
    }
    // FULL: the WAL is fsync'ed at every commit, so a commit survives power loss, not only a
    // process crash (NORMAL would only promise the latter in WAL mode).
    MOAT_TRY(conn->ExecTrusted("PRAGMA synchronous=FULL"));
    MOAT_ASSIGN_OR_RETURN(std::string sync, conn->PragmaValue("PRAGMA synchronous"));
    if (sync != "2") {
      return Fail(ErrorCode::kInternal, "PRAGMA synchronous=FULL did not take (it is {})", sync);
    }
  } else {
    // Database::Query also rejects writing statements up front; this makes sure of it.
    MOAT_TRY(conn->ExecTrusted("PRAGMA query_only=ON"));
  }
  MOAT_TRY(conn->ExecTrusted("PRAGMA foreign_keys=ON"));
  MOAT_ASSIGN_OR_RETURN(std::string fk, conn->PragmaValue("PRAGMA foreign_keys"));
  if (fk != "1") {
    return Fail(ErrorCode::kInternal, "this SQLite does not enforce foreign keys");
  }
  return conn;
}

Result<Connection::Prepared> Connection::Prepare(std::string_view sql, unsigned flags) {
  if (sql.size() > INT_MAX) {
    return Fail(ErrorCode::kLimitExceeded, "statement of {} bytes is too long", sql.size());
  }
  auto with_sql = [&](const Error& e) {
    return Fail(e.WithContext(fmt::format("in: {}", StatementForMessage(sql))));
  };
  if (auto portable = CheckPortableSql(sql); !portable) return with_sql(portable.error());
  MOAT_ASSIGN_OR_RETURN(std::vector<std::string_view> statements, SplitStatements(sql));
  if (statements.size() != 1) {
    return with_sql(Error(ErrorCode::kInvalidArgument,
                          fmt::format("expected one statement, found {}", statements.size())));
  }
  sqlite3_stmt* raw = nullptr;
  int rc =
      sqlite3_prepare_v3(db_.get(), sql.data(), static_cast<int>(sql.size()), flags, &raw, nullptr);
  StatementPtr stmt(raw);
  if (rc != SQLITE_OK) return Fail(StatementError(db_.get(), rc, sql));
  if (stmt == nullptr) {
    return with_sql(Error(ErrorCode::kInvalidArgument, "no statement"));
  }
  const int count = sqlite3_bind_parameter_count(stmt.get());
  for (int i = 1; i <= count; ++i) {
    // Only nameless `?` placeholders have no name; the portability check rejects the others,
    // this makes sure nothing slipped through.
    if (sqlite3_bind_parameter_name(stmt.get(), i) != nullptr) {
      return with_sql(
          Error(ErrorCode::kInvalidArgument, fmt::format("placeholder {} is not a plain ?", i)));
    }
  }
  const std::string verb = MainVerb(sql);
  return Prepared{.stmt = std::move(stmt),
                  .placeholders = static_cast<size_t>(count),
                  .modifies_rows = verb == "INSERT" || verb == "UPDATE" || verb == "DELETE"};
}

Result<Connection::Prepared*> Connection::PrepareCached(std::string_view sql) {
  if (auto it = cache_.find(sql); it != cache_.end()) return &it->second;
  MOAT_ASSIGN_OR_RETURN(Prepared prepared, Prepare(sql, SQLITE_PREPARE_PERSISTENT));
  // Handlers use a fixed set of statements, so the cache rarely fills; when it does, dropping
  // an arbitrary entry is simple and good enough.
  if (cache_.size() >= kStatementCacheSize) cache_.erase(cache_.begin());
  auto [it, inserted] = cache_.emplace(std::string(sql), std::move(prepared));
  return &it->second;
}

Result<int64_t> Connection::Run(std::string_view sql, std::span<const Value> params, Access access,
                                CacheUse cache_use, std::vector<Row>* rows) {
  Prepared uncached;
  Prepared* prepared = &uncached;
  if (cache_use == CacheUse::kCache) {
    MOAT_ASSIGN_OR_RETURN(prepared, PrepareCached(sql));
  } else {
    MOAT_ASSIGN_OR_RETURN(uncached, Prepare(sql, 0));
  }
  sqlite3_stmt* stmt = prepared->stmt.get();
  if (access == Access::kReadOnly && sqlite3_stmt_readonly(stmt) == 0) {
    return Fail(ErrorCode::kInvalidArgument,
                "Database::Query is read-only; write inside Database::Transact (in: {})",
                StatementForMessage(sql));
  }
  if (params.size() != prepared->placeholders) {
    return Fail(ErrorCode::kInvalidArgument,
                "statement has {} placeholders but {} values were given (in: {})",
                prepared->placeholders, params.size(), StatementForMessage(sql));
  }
  ResetOnExit reset(stmt);
  for (size_t i = 0; i < params.size(); ++i) {
    if (auto ok = CheckBindable(params[i], i + 1); !ok) {
      return Fail(ok.error().WithContext(fmt::format("in: {}", StatementForMessage(sql))));
    }
    int rc = Bind(stmt, static_cast<int>(i + 1), params[i]);
    if (rc != SQLITE_OK) return Fail(StatementError(db_.get(), rc, sql));
  }
  for (;;) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Fail(StatementError(db_.get(), rc, sql));
    if (rows == nullptr) continue;
    if (rows->size() >= max_rows_) {
      return Fail(ErrorCode::kLimitExceeded,
                  "query returned more than {} rows; page with LIMIT and a key (in: {})", max_rows_,
                  StatementForMessage(sql));
    }
    MOAT_ASSIGN_OR_RETURN(Row row, ReadRow(db_.get(), stmt, sql));
    rows->push_back(std::move(row));
  }
  return prepared->modifies_rows ? sqlite3_changes64(db_.get()) : 0;
}

// The Session a Transact body receives. Mirrors PostgreSQL: after the first failed call the
// transaction is aborted and every further call fails, so bodies cannot come to rely on
// SQLite's statement-level rollback.
class SqliteSession final : public Session {
 public:
  explicit SqliteSession(Connection& conn) : conn_(conn) {}

  const std::optional<Error>& failure() const { return failure_; }
  // Whether a call failed because the database was locked (the body is then worth retrying).
  bool busy() const { return failure_.has_value() && failure_->code() == ErrorCode::kUnavailable; }

  // For migrations: DDL is run once, so it does not belong in the statement cache.
  Result<void> ExecuteUncached(std::string_view sql) {
    MOAT_TRY(Check());
    auto r = conn_.Run(sql, {}, Access::kReadWrite, CacheUse::kNoCache, nullptr);
    if (!r) return Record(std::move(r).error());
    return Ok();
  }

 protected:
  Result<std::vector<Row>> DoQuery(std::string_view sql, std::span<const Value> params) override {
    MOAT_TRY(Check());
    std::vector<Row> rows;
    auto r = conn_.Run(sql, params, Access::kReadWrite, CacheUse::kCache, &rows);
    if (!r) return Record(std::move(r).error());
    return rows;
  }

  Result<int64_t> DoExecute(std::string_view sql, std::span<const Value> params) override {
    MOAT_TRY(Check());
    auto r = conn_.Run(sql, params, Access::kReadWrite, CacheUse::kCache, nullptr);
    if (!r) return Record(std::move(r).error());
    return *r;
  }

 private:
  Result<void> Check() const {
    if (failure_) {
      return Fail(ErrorCode::kFailedPrecondition, "transaction aborted by an earlier error: {}",
                  failure_->message());
    }
    return Ok();
  }
  std::unexpected<Error> Record(Error e) {
    failure_ = e;
    return Fail(std::move(e));
  }

  Connection& conn_;
  std::optional<Error> failure_;
};

// Databases whose Transact body is running on this thread (a body may use another database).
thread_local std::vector<const Database*> tls_transacting;

class ActiveTransaction {
 public:
  explicit ActiveTransaction(const Database* db) { tls_transacting.push_back(db); }
  ~ActiveTransaction() { tls_transacting.pop_back(); }
  ActiveTransaction(const ActiveTransaction&) = delete;
  ActiveTransaction& operator=(const ActiveTransaction&) = delete;

  static bool Active(const Database* db) {
    return std::find(tls_transacting.begin(), tls_transacting.end(), db) != tls_transacting.end();
  }
};

class SqliteDatabase final : public Database {
 public:
  explicit SqliteDatabase(SqliteOptions options) : options_(std::move(options)) {}

  Result<void> Init(std::span<const Migration> known);

  Result<void> Transact(const Body& body) override;
  std::string_view backend() const override { return "sqlite"; }

 protected:
  Result<std::vector<Row>> DoQuery(std::string_view sql, std::span<const Value> params) override;

 private:
  enum class Attempt { kDone, kRetry };

  // One try of a transaction; write_mu_ held. kRetry when the database was locked.
  Result<Attempt> TryTransact(const Body& body);
  // Rolls back the writer's open transaction; discards the connection if that fails, so the
  // next transaction starts from a fresh one. write_mu_ held.
  void Rollback();
  Result<void> Migrate(std::span<const Migration> known);

  std::unique_ptr<Connection> AcquireReader();
  void ReleaseReader(std::unique_ptr<Connection> conn);

  class ReaderLease {
   public:
    explicit ReaderLease(SqliteDatabase& db) : db_(db), conn_(db.AcquireReader()) {}
    ~ReaderLease() { db_.ReleaseReader(std::move(conn_)); }
    ReaderLease(const ReaderLease&) = delete;
    ReaderLease& operator=(const ReaderLease&) = delete;
    Connection* operator->() const { return conn_.get(); }

   private:
    SqliteDatabase& db_;
    std::unique_ptr<Connection> conn_;
  };

  const SqliteOptions options_;

  std::mutex write_mu_;
  std::unique_ptr<Connection> writer_;  // guarded by write_mu_; null after a failed rollback

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Connection>> idle_readers_;  // guarded by pool_mu_
};

std::unique_ptr<Connection> SqliteDatabase::AcquireReader() {
  std::unique_lock lock(pool_mu_);
  pool_cv_.wait(lock, [&] { return !idle_readers_.empty(); });
  std::unique_ptr<Connection> conn = std::move(idle_readers_.back());
  idle_readers_.pop_back();
  return conn;
}

void SqliteDatabase::ReleaseReader(std::unique_ptr<Connection> conn) {
  {
    std::lock_guard lock(pool_mu_);
    idle_readers_.push_back(std::move(conn));
  }
  pool_cv_.notify_one();
}

Result<std::vector<Row>> SqliteDatabase::DoQuery(std::string_view sql,
                                                 std::span<const Value> params) {
  if (ActiveTransaction::Active(this)) {
    return Fail(ErrorCode::kFailedPrecondition,
                "Database::Query inside a Transact body would not see the transaction's writes; "
                "use the Session (in: {})",
                StatementForMessage(sql));
  }
  ReaderLease reader(*this);
  std::vector<Row> rows;
  MOAT_TRY(reader->Run(sql, params, Access::kReadOnly, CacheUse::kCache, &rows));
  return rows;
}

void SqliteDatabase::Rollback() {
  if (writer_ == nullptr || !writer_->InTransaction()) return;  // SQLite may have rolled back
  if (!writer_->ExecTrusted("ROLLBACK") || writer_->InTransaction()) writer_.reset();
}

Result<void> SqliteDatabase::Transact(const Body& body) {
  if (ActiveTransaction::Active(this)) {
    return Fail(ErrorCode::kFailedPrecondition,
                "Transact called inside a Transact body on the same database; use the Session");
  }
  std::lock_guard lock(write_mu_);
  ActiveTransaction active(this);
  auto backoff = std::chrono::milliseconds(10);
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) {
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
    MOAT_ASSIGN_OR_RETURN(Attempt outcome, TryTransact(body));
    if (outcome == Attempt::kDone) return Ok();
  }
  return Fail(ErrorCode::kUnavailable,
              "{}: database stayed locked by another connection through {} attempts of {} ms",
              options_.path.string(), options_.max_attempts, options_.busy_timeout.count());
}

Result<SqliteDatabase::Attempt> SqliteDatabase::TryTransact(const Body& body) {
  if (writer_ == nullptr) {
    MOAT_ASSIGN_OR_RETURN(writer_, Connection::Open(options_, Role::kWriter));
  }
  // IMMEDIATE takes the write lock now, so the body cannot fail half-way on a lock.
  if (auto begin = writer_->ExecTrusted("BEGIN IMMEDIATE"); !begin) {
    if (begin.error().code() == ErrorCode::kUnavailable) return Attempt::kRetry;
    return Fail(std::move(begin).error());
  }
  // Rolls back on every way out but a commit, including an exception from the body.
  struct RollbackUnlessCommitted {
    SqliteDatabase* db;
    ~RollbackUnlessCommitted() { db->Rollback(); }
  } rollback{this};

  SqliteSession session(*writer_);
  Result<void> result = body(session);
  if (session.busy()) return Attempt::kRetry;
  if (!result) return Fail(std::move(result).error());
  // The body swallowed an error: the transaction is aborted all the same.
  if (session.failure()) return Fail(*session.failure());
  if (!writer_->InTransaction()) {
    return Fail(ErrorCode::kInternal, "the transaction ended inside the body");
  }
  if (auto commit = writer_->ExecTrusted("COMMIT"); !commit) {
    if (commit.error().code() == ErrorCode::kUnavailable) return Attempt::kRetry;
    return Fail(std::move(commit).error());
  }
  return Attempt::kDone;
}

Result<void> SqliteDatabase::Migrate(std::span<const Migration> known) {
  const SystemClock system_clock;
  const Clock& clock = options_.clock != nullptr ? *options_.clock : system_clock;
  // One migration per transaction; each transaction re-reads what is recorded under the write
  // lock, so two processes opening the same file cannot apply a migration twice.
  for (;;) {
    std::optional<Migration> applying;
    auto result = Transact([&](Session& s) -> Result<void> {
      auto& session = static_cast<SqliteSession&>(s);
      applying.reset();
      MOAT_TRY(session.ExecuteUncached(kCreateSchemaMigrations));
      MOAT_ASSIGN_OR_RETURN(
          std::vector<Row> rows,
          s.Query("SELECT version, name, checksum FROM schema_migrations ORDER BY version"));
      std::vector<AppliedMigration> applied;
      for (const Row& row : rows) {
        AppliedMigration a;
        MOAT_ASSIGN_OR_RETURN(a.version, row.Int(0));
        MOAT_ASSIGN_OR_RETURN(a.name, row.Text(1));
        MOAT_ASSIGN_OR_RETURN(a.checksum, row.Text(2));
        applied.push_back(std::move(a));
      }
      MOAT_ASSIGN_OR_RETURN(std::vector<Migration> pending, PendingMigrations(applied, known));
      if (pending.empty()) return Ok();
      applying = pending.front();
      const Migration& m = *applying;
      MOAT_ASSIGN_OR_RETURN(std::vector<std::string_view> statements, SplitStatements(m.sql));
      for (std::string_view statement : statements) {
        MOAT_TRY(session.ExecuteUncached(statement));
      }
      const int64_t now = UnixSeconds(clock.Now());
      MOAT_TRY(
          s.Execute("INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                    "VALUES (?, ?, ?, ?)",
                    {int64_t{m.version}, std::string(m.name), MigrationChecksum(m.sql), now}));
      return Ok();
    });
    if (!result) {
      if (applying) {
        return Fail(result.error().WithContext(
            fmt::format("migration {} (\"{}\")", applying->version, applying->name)));
      }
      return result;
    }
    if (!applying) return Ok();
  }
}

Result<void> SqliteDatabase::Init(std::span<const Migration> known) {
  MOAT_ASSIGN_OR_RETURN(writer_, Connection::Open(options_, Role::kWriter));
  MOAT_TRY(Migrate(known));
  // Readers open after the migrations, so they start with the final schema.
  for (int i = 0; i < options_.pool_size; ++i) {
    MOAT_ASSIGN_OR_RETURN(std::unique_ptr<Connection> reader,
                          Connection::Open(options_, Role::kReader));
    idle_readers_.push_back(std::move(reader));
  }
  return Ok();
}

// Creates the file with mode 0600 if it does not exist: SQLite would use 0644, and SQLite's
// -wal and -shm files copy the database file's mode.
Result<void> CreateDatabaseFile(const std::filesystem::path& path) {
  auto created = OpenFile(path, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (!created) {
    if (created.error().code() == ErrorCode::kAlreadyExists) return Ok();
    return Fail(std::move(created).error());
  }
  // The new directory entry must be durable before anything committed into the file is.
  std::filesystem::path dir = path.parent_path();
  return SyncDirectory(dir.empty() ? std::filesystem::path(".") : dir);
}

}  // namespace

Result<std::unique_ptr<Database>> OpenSqlite(const SqliteOptions& options,
                                             std::span<const Migration> migrations) {
  const std::string where = options.path.string();
  if (options.path.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "sqlite: database path is empty");
  }
  if (options.pool_size < 1 || options.pool_size > kMaxPoolSize) {
    return Fail(ErrorCode::kInvalidArgument, "{}: pool_size {} is outside 1..{}", where,
                options.pool_size, kMaxPoolSize);
  }
  if (options.max_attempts < 1) {
    return Fail(ErrorCode::kInvalidArgument, "{}: max_attempts {} is below 1", where,
                options.max_attempts);
  }
  if (options.busy_timeout.count() < 0 || options.max_rows == 0) {
    return Fail(ErrorCode::kInvalidArgument, "{}: busy_timeout and max_rows must be positive",
                where);
  }
  // The library loaded at run time may be older than the header we compiled against.
  if (sqlite3_libversion_number() < 3037000) {
    return Fail(ErrorCode::kFailedPrecondition, "{}: SQLite {} is too old (need 3.37 or newer)",
                where, sqlite3_libversion());
  }
  if (sqlite3_threadsafe() == 0) {
    return Fail(ErrorCode::kFailedPrecondition, "{}: SQLite was built without thread support",
                where);
  }
  MOAT_ASSIGN_OR_RETURN(std::vector<Migration> known, CheckMigrations(migrations));
  // SQLite reads a name starting with "file:" as a URI (Debian builds with SQLITE_USE_URI),
  // which could change how the file is opened; an absolute path never does.
  std::error_code ec;
  SqliteOptions resolved = options;
  resolved.path = std::filesystem::absolute(options.path, ec);
  if (ec) {
    return Fail(ErrorCode::kInvalidArgument, "{}: cannot make the path absolute: {}", where,
                ec.message());
  }
  MOAT_TRY(CreateDatabaseFile(resolved.path));
  auto db = std::make_unique<SqliteDatabase>(std::move(resolved));
  if (auto init = db->Init(known); !init) {
    return Fail(init.error().WithContext(where));
  }
  return std::unique_ptr<Database>(std::move(db));
}

}  // namespace moat::store
