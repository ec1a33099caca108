// Migration bookkeeping shared by the backends: validating the compiled-in list, the
// schema_migrations table, and comparing what a database recorded with what this binary knows.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "store/database.h"

namespace moat::store {

// Portable DDL for the bookkeeping table, run before anything else.
inline constexpr std::string_view kCreateSchemaMigrations =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " checksum TEXT NOT NULL,"
    " applied_at BIGINT NOT NULL)";

// A row of schema_migrations.
struct AppliedMigration {
  int64_t version = 0;
  std::string name;
  std::string checksum;
};

// "fnv1a64:<16 lowercase hex digits>" of the migration's SQL bytes. It detects an edited
// migration (an accident), not a forged one: whoever can write the database can write this
// column too, so it is deliberately not a cryptographic digest.
std::string MigrationChecksum(std::string_view sql);

// Validates the compiled-in list (versions > 0 and unique, names and SQL non-empty, SQL in the
// portable subset) and returns it sorted by version. kInvalidArgument names the migration.
Result<std::vector<Migration>> CheckMigrations(std::span<const Migration> migrations);

// Compares the recorded migrations with `known` (sorted, from CheckMigrations) and returns the
// known ones not applied yet, in order. kFailedPrecondition when the database is newer than this
// binary ("database schema version 7 is newer than this moat-service (5); upgrade
// moat-service"), records a migration this binary does not have, records one whose name or
// checksum differs from the compiled-in one, or lacks a known migration older than its newest
// (which would run out of order).
Result<std::vector<Migration>> PendingMigrations(std::span<const AppliedMigration> applied,
                                                 std::span<const Migration> known);

// Checks that the migration recorded under `applied.version` is `known`.
Result<void> VerifyApplied(const AppliedMigration& applied, const Migration& known);

}  // namespace moat::store
