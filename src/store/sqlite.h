// The SQLite backend of store::Database: one node, one file, WAL mode.
//
// Durability: journal_mode=WAL with synchronous=FULL, so a commit is fsync'ed before Transact
// returns: an acknowledged commit survives kill -9 and power loss (given storage that honours
// fsync). foreign_keys=ON. Connections run with SQLite's defensive mode, trusted_schema=OFF, no
// extension loading, and double-quoted strings disabled ("x" is always an identifier, as on
// PostgreSQL).
//
// Threading: one writer connection, guarded by a mutex, serves Transact, so in-process writers
// queue on the mutex instead of in SQLite's sleep-and-retry busy handler; a pool of
// `pool_size` read-only connections serves Database::Query concurrently (WAL readers never block
// the writer or each other). Each sqlite3 connection is used by one thread at a time. The
// busy timeout and retries matter only when another process (a backup, the sqlite3 shell) holds
// the lock.
//
// Files: the database is created with mode 0600 (its -wal and -shm files inherit that mode).
// Only one moat-service should use a database file at a time, but a second opener is safe:
// migrations take the write lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>

#include "core/clock.h"
#include "core/error.h"
#include "store/database.h"

namespace moat::store {

struct SqliteOptions {
  std::filesystem::path path;
  int pool_size = 4;  // read-only connections for Database::Query, 1..64
  // How long one attempt waits for a lock held by another process.
  std::chrono::milliseconds busy_timeout{5000};
  // Transact runs the body at most this many times while the database stays locked (>= 1).
  int max_attempts = 3;
  // A query returning more rows fails with kLimitExceeded: page with LIMIT/OFFSET or by key.
  size_t max_rows = 100'000;
  // Stamps schema_migrations.applied_at; nullptr means the system clock. Used only while
  // OpenSqlite runs.
  const Clock* clock = nullptr;
};

// Opens the database at options.path, creating it (mode 0600) if needed, and brings its schema
// up to date: applies each migration not yet recorded, in version order, each in its own
// transaction together with its schema_migrations row. Fails without applying anything if the
// recorded schema is newer than the newest known migration ("database schema version 7 is newer
// than this moat-service (5); upgrade moat-service"), or a recorded migration differs from the
// compiled-in one. A migration that fails is rolled back and not recorded; the error names it.
// Errors are prefixed with the path.
Result<std::unique_ptr<Database>> OpenSqlite(const SqliteOptions& options,
                                             std::span<const Migration> migrations);

}  // namespace moat::store
