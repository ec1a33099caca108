// The portable SQL subset (docs/store.md): a checker that every backend runs on the SQL it is
// given, and the small lexical helpers backends need (splitting a migration into statements,
// finding a statement's verb, numbering `?` placeholders for PostgreSQL).
//
// The checker is a lexical safety net, not a parser: it knows string literals, quoted
// identifiers and comments (so a forbidden word inside 'text' is fine) and rejects the SQLite-
// and PostgreSQL-only constructs that are easy to write by accident. Running the suite on both
// engines is the real proof. All functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat::store {

// Checks `sql` (one or more statements separated by ';') against the portable subset. On
// failure: kInvalidArgument naming the offending word, its byte offset and what to write
// instead, e.g. `not portable SQL: AUTOINCREMENT at offset 31 is SQLite-only; ids come from
// the application (a UUID) or a natural key`.
Result<void> CheckPortableSql(std::string_view sql);

// Splits a script at top-level ';' into statements (string_views into `sql`, without the ';',
// never empty). Fails like CheckPortableSql on unterminated literals or comments.
Result<std::vector<std::string_view>> SplitStatements(std::string_view sql);

// The main verb of one statement, in upper case: its first keyword ("SELECT", "INSERT",
// "CREATE", ...), or for WITH the first keyword after the common table expressions. Empty if
// the statement has no keyword.
std::string MainVerb(std::string_view statement);

// The number of `?` placeholders outside literals and comments.
size_t CountPlaceholders(std::string_view statement);

// Rewrites each `?` placeholder outside literals and comments to $1, $2, ... (PostgreSQL).
std::string NumberPlaceholders(std::string_view statement);

}  // namespace moat::store
