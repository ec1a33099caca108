// Service persistence: the Database interface handlers use, whatever engine is behind it
// (SQLite today, PostgreSQL next; see store/sqlite.h and docs/store.md).
//
// SQL contract. Handlers write SQL in the portable subset of docs/store.md, which runs
// unchanged on SQLite and PostgreSQL, with `?` placeholders. Values are always bound, never
// put into the SQL text. One call runs exactly one statement. The SQLite backend rejects SQL
// outside the subset (see store/portable_sql.h) with kInvalidArgument, so a non-portable
// statement fails in the first test that runs it rather than on the first PostgreSQL deployment.
//
// Errors (every backend maps its engine's errors to these codes):
//   kAlreadyExists       UNIQUE or PRIMARY KEY constraint; the message names the constraint
//   kFailedPrecondition  FOREIGN KEY constraint; misuse of a transaction (nesting, use after error)
//   kInvalidArgument     CHECK or NOT NULL constraint; SQL outside the portable subset; wrong
//                        number of values; text that is not UTF-8 or holds NUL; NaN
//   kLimitExceeded       a query returned more rows than the backend's limit
//   kUnavailable         the database stayed locked/serialisation kept failing after retries
//   kIo                  the engine could not read or write its files (disk full, I/O error)
//   kInternal            anything else, with the engine's message
// Messages end with the statement ("... (in: INSERT INTO devices ...)"); SQL text never holds
// values, so messages never leak them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/clock.h"
#include "core/error.h"

namespace moat::store {

// One SQL value:
//   std::monostate         NULL
//   int64_t                BIGINT (bool and int convert to it; unsigned types do not, on purpose)
//   double                 DOUBLE PRECISION, never NaN (SQLite would store NaN as NULL)
//   std::string            TEXT: valid UTF-8 without NUL bytes (PostgreSQL TEXT cannot hold NUL;
//                          binary data belongs in a BLOB)
//   std::vector<uint8_t>   BLOB (bytea on PostgreSQL); an empty blob stays an empty blob, not NULL
using Value = std::variant<std::monostate, int64_t, double, std::string, std::vector<uint8_t>>;

// Spelled in parameter lists for readability: {store::kNull, int64_t{3}}.
inline constexpr std::monostate kNull{};

// Timestamps are stored as BIGINT unix seconds (sub-second parts are dropped, towards the past).
int64_t UnixSeconds(SystemTime t);
SystemTime FromUnixSeconds(int64_t seconds);

// One result row: the column values in SELECT order. Accessors are strict: asking for an integer
// where the column holds text (or NULL) is an error, not a conversion; check IsNull() first for
// nullable columns. A wrong type means the query and the code disagree, so it is kInternal.
class Row {
 public:
  Row() = default;
  explicit Row(std::vector<Value> values) : values_(std::move(values)) {}

  size_t size() const { return values_.size(); }
  // Precondition: column < size() (the program aborts otherwise: the SQL is in the code).
  bool IsNull(size_t column) const;
  const Value& at(size_t column) const;

  Result<int64_t> Int(size_t column) const;
  Result<double> Double(size_t column) const;
  Result<std::string> Text(size_t column) const;
  Result<std::vector<uint8_t>> Blob(size_t column) const;

  const std::vector<Value>& values() const { return values_; }
  bool operator==(const Row&) const = default;

 private:
  std::vector<Value> values_;
};

// One connection's view inside a transaction: what a Database::Transact body receives.
//
// Valid only while the body runs, and only on the thread running it; do not keep it. Any error
// from a Session call aborts the transaction (as PostgreSQL does): later calls fail with
// kFailedPrecondition and the transaction rolls back even if the body returns ok. So do not
// "try the INSERT and look at the error" — write INSERT ... ON CONFLICT (...) DO NOTHING and
// look at the rows affected (or RETURNING) instead.
class Session {
 public:
  virtual ~Session() = default;

  // Runs one statement and returns its rows (SELECT, or INSERT/UPDATE/DELETE ... RETURNING).
  Result<std::vector<Row>> Query(std::string_view sql, std::initializer_list<Value> params = {}) {
    return DoQuery(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Result<std::vector<Row>> Query(std::string_view sql, std::span<const Value> params) {
    return DoQuery(sql, params);
  }

  // Like Query, for a statement that must yield exactly one row: kNotFound if it yields none,
  // kInternal if more than one (the query was meant to select by a key).
  Result<Row> QueryOne(std::string_view sql, std::initializer_list<Value> params = {}) {
    return QueryOne(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Result<Row> QueryOne(std::string_view sql, std::span<const Value> params);

  // Runs one statement and returns the number of rows it inserted, updated or deleted (0 for
  // DDL and SELECT). Rows from RETURNING are discarded.
  Result<int64_t> Execute(std::string_view sql, std::initializer_list<Value> params = {}) {
    return DoExecute(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Result<int64_t> Execute(std::string_view sql, std::span<const Value> params) {
    return DoExecute(sql, params);
  }

 protected:
  virtual Result<std::vector<Row>> DoQuery(std::string_view sql, std::span<const Value> params) = 0;
  virtual Result<int64_t> DoExecute(std::string_view sql, std::span<const Value> params) = 0;
};

// A database: thread-safe; any number of threads may call Transact and Query at once. It must
// outlive every call into it.
class Database {
 public:
  using Body = std::function<Result<void>(Session&)>;

  virtual ~Database() = default;

  // Runs `body` in one read-write transaction. If the body returns ok (and no Session call
  // failed) the transaction commits and Transact returns ok only once the commit is durable;
  // otherwise it rolls back and returns the body's (or the first failed call's) error.
  //
  // Writers are serialised: on SQLite a transaction takes the write lock up front (BEGIN
  // IMMEDIATE), so a body never fails half-way because another writer got there first. When the
  // database stays locked by another process, or (PostgreSQL) a serialisation failure occurs,
  // the WHOLE body runs again, a bounded number of times with backoff, then Transact fails with
  // kUnavailable. So a body must have no effects outside the Session that cannot be repeated:
  // compute, read and write through the Session, and act on the result after Transact returns.
  //
  // Keep bodies short (no network I/O, no signing): other writers wait for them. A body must
  // not call Transact or Database::Query on the same database (kFailedPrecondition: the first
  // would deadlock, the second would not see the transaction's own writes).
  virtual Result<void> Transact(const Body& body) = 0;

  // Read-only convenience outside an explicit transaction: one statement, its own consistent
  // snapshot. A statement that writes is rejected with kInvalidArgument.
  Result<std::vector<Row>> Query(std::string_view sql, std::initializer_list<Value> params = {}) {
    return DoQuery(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Result<std::vector<Row>> Query(std::string_view sql, std::span<const Value> params) {
    return DoQuery(sql, params);
  }
  Result<Row> QueryOne(std::string_view sql, std::initializer_list<Value> params = {}) {
    return QueryOne(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Result<Row> QueryOne(std::string_view sql, std::span<const Value> params);

  // "sqlite" or "postgresql".
  virtual std::string_view backend() const = 0;

 protected:
  virtual Result<std::vector<Row>> DoQuery(std::string_view sql, std::span<const Value> params) = 0;
};

// One step of the schema. Migrations are applied once each, in increasing version order, each
// in its own transaction, and recorded (version, name, checksum of `sql`) in the table
// schema_migrations. An applied migration must never change: opening a database whose recorded
// migration differs from the one compiled in fails. To change the schema, add a migration.
struct Migration {
  int version = 0;        // > 0, unique; gaps are allowed but unusual
  std::string_view name;  // short snake_case description, e.g. "create_devices"
  std::string_view sql;   // one or more portable statements separated by ';' (no BEGIN/COMMIT)
};

}  // namespace moat::store
