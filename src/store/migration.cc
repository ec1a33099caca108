#include "store/migration.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "store/portable_sql.h"

namespace moat::store {

std::string MigrationChecksum(std::string_view sql) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis
  for (unsigned char c : sql) {
    hash ^= c;
    hash *= 0x100000001b3ull;  // FNV-1a 64 prime
  }
  return fmt::format("fnv1a64:{:016x}", hash);
}

Result<std::vector<Migration>> CheckMigrations(std::span<const Migration> migrations) {
  std::vector<Migration> sorted(migrations.begin(), migrations.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    const Migration& m = sorted[i];
    if (m.version <= 0) {
      return Fail(ErrorCode::kInvalidArgument, "migration {} (\"{}\"): version must be > 0",
                  m.version, m.name);
    }
    if (i > 0 && sorted[i - 1].version == m.version) {
      return Fail(ErrorCode::kInvalidArgument,
                  "migration {}: version used twice (\"{}\" and \"{}\")", m.version,
                  sorted[i - 1].name, m.name);
    }
    if (m.name.empty()) {
      return Fail(ErrorCode::kInvalidArgument, "migration {}: name is empty", m.version);
    }
    auto statements = SplitStatements(m.sql);
    if (!statements) {
      return Fail(
          statements.error().WithContext(fmt::format("migration {} (\"{}\")", m.version, m.name)));
    }
    if (statements->empty()) {
      return Fail(ErrorCode::kInvalidArgument, "migration {} (\"{}\"): no SQL statements",
                  m.version, m.name);
    }
    if (auto portable = CheckPortableSql(m.sql); !portable) {
      return Fail(
          portable.error().WithContext(fmt::format("migration {} (\"{}\")", m.version, m.name)));
    }
  }
  return sorted;
}

Result<void> VerifyApplied(const AppliedMigration& applied, const Migration& known) {
  const std::string checksum = MigrationChecksum(known.sql);
  if (applied.name != known.name || applied.checksum != checksum) {
    return Fail(ErrorCode::kFailedPrecondition,
                "migration {} was applied as \"{}\" ({}) but this moat-service has \"{}\" ({}); "
                "an applied migration must never change: add a new migration instead",
                applied.version, applied.name, applied.checksum, known.name, checksum);
  }
  return Ok();
}

Result<std::vector<Migration>> PendingMigrations(std::span<const AppliedMigration> applied,
                                                 std::span<const Migration> known) {
  const int64_t newest_known = known.empty() ? 0 : known.back().version;
  std::map<int64_t, const Migration*> by_version;
  for (const Migration& m : known) by_version[m.version] = &m;

  int64_t newest_applied = 0;
  for (const AppliedMigration& a : applied) newest_applied = std::max(newest_applied, a.version);
  if (newest_applied > newest_known) {
    return Fail(ErrorCode::kFailedPrecondition,
                "database schema version {} is newer than this moat-service ({}); upgrade "
                "moat-service",
                newest_applied, newest_known);
  }
  for (const AppliedMigration& a : applied) {
    auto it = by_version.find(a.version);
    if (it == by_version.end()) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "database records migration {} (\"{}\"), which this moat-service does not have",
                  a.version, a.name);
    }
    MOAT_TRY(VerifyApplied(a, *it->second));
    by_version.erase(it);
  }
  std::vector<Migration> pending;
  for (const auto& [version, m] : by_version) {
    // Applying it now would run it after migrations that were written to follow it.
    if (version < newest_applied) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "migration {} (\"{}\") is older than the database schema version {} but was "
                  "never applied; give it a version above {}",
                  version, m->name, newest_applied, newest_applied);
    }
    pending.push_back(*m);
  }
  return pending;
}

}  // namespace moat::store
