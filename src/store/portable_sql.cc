#include "store/portable_sql.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <span>
#include <utility>

#include <fmt/format.h>

namespace moat::store {
namespace {

// ---------------------------------------------------------------------------------------------
// Lexer. Lenient by design: it never fails, it marks what it cannot accept (kBad) or could not
// finish (kUnterminated), so the helpers below work on any input and the checker reports.

enum class TokenKind {
  kWord,         // keyword or unquoted identifier
  kNumber,       //
  kString,       // '...'
  kQuotedIdent,  // "..."
  kPlaceholder,  // ?
  kSemicolon,    //
  kSymbol,       // any other single character
  kBad,          // a character or sequence outside the subset; `reason` says why
  kUnterminated  // a literal, quoted identifier or comment that runs to the end
};

struct Token {
  TokenKind kind;
  std::string_view text;
  size_t offset;
  std::string_view reason = {};  // for kBad and kUnterminated
};

bool IsWordStart(unsigned char c) { return std::isalpha(c) || c == '_' || c >= 0x80; }
bool IsWordChar(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::vector<Token> Lex(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  const size_t n = s.size();
  auto at = [&](size_t k) -> char { return k < n ? s[k] : '\0'; };
  while (i < n) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '-' && at(i + 1) == '-') {
      size_t end = s.find('\n', i);
      i = end == std::string_view::npos ? n : end + 1;
    } else if (c == '/' && at(i + 1) == '*') {
      size_t end = s.find("*/", i + 2);
      if (end == std::string_view::npos) {
        out.push_back({TokenKind::kUnterminated, s.substr(i), i, "comment"});
        i = n;
      } else {
        // PostgreSQL nests block comments, SQLite does not: the two would end them differently.
        if (s.substr(i + 2, end - i - 2).find("/*") != std::string_view::npos) {
          out.push_back(
              {TokenKind::kBad, s.substr(i, 2), i,
               "nested comments end differently (PostgreSQL nests them, SQLite does not)"});
        }
        i = end + 2;
      }
    } else if (c == '\'' || c == '"') {
      // '' inside a string and "" inside an identifier are the quote itself.
      size_t j = i + 1;
      bool closed = false;
      while (j < n) {
        if (s[j] == c) {
          if (at(j + 1) == c) {
            j += 2;
            continue;
          }
          closed = true;
          ++j;
          break;
        }
        ++j;
      }
      if (!closed) {
        out.push_back({TokenKind::kUnterminated, s.substr(i), i,
                       c == '\'' ? "string literal" : "quoted identifier"});
      } else {
        out.push_back(
            {c == '\'' ? TokenKind::kString : TokenKind::kQuotedIdent, s.substr(i, j - i), i});
      }
      i = j;
    } else if (c == '`' || c == '[') {
      out.push_back({TokenKind::kBad, s.substr(i, 1), i,
                     "SQLite/MySQL identifier quoting; quote identifiers with \"...\" (better: use "
                     "lowercase unquoted names)"});
      ++i;
    } else if (c == '?') {
      if (IsDigit(at(i + 1))) {
        size_t j = i + 1;
        while (j < n && IsDigit(s[j])) ++j;
        out.push_back({TokenKind::kBad, s.substr(i, j - i), i,
                       "numbered placeholders are not portable; write a plain ? for each value"});
        i = j;
      } else {
        out.push_back({TokenKind::kPlaceholder, s.substr(i, 1), i});
        ++i;
      }
    } else if (c == ':' || c == '@' || c == '$') {
      size_t j = i + 1;
      while (j < n && (IsWordChar(static_cast<unsigned char>(s[j])) || s[j] == ':')) ++j;
      out.push_back({TokenKind::kBad, s.substr(i, j - i), i,
                     "named and $n placeholders and :: casts are not portable; write ? for "
                     "values and CAST(x AS type) for casts"});
      i = j;
    } else if (IsDigit(c) || (c == '.' && IsDigit(at(i + 1)))) {
      size_t j = i + 1;
      while (j < n) {
        const char d = s[j];
        if (std::isalnum(static_cast<unsigned char>(d)) || d == '.' || d == '_') {
          ++j;
        } else if ((d == '+' || d == '-') && (s[j - 1] == 'e' || s[j - 1] == 'E')) {
          ++j;
        } else {
          break;
        }
      }
      out.push_back({TokenKind::kNumber, s.substr(i, j - i), i});
      i = j;
    } else if (IsWordStart(static_cast<unsigned char>(c))) {
      size_t j = i + 1;
      while (j < n && IsWordChar(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back({TokenKind::kWord, s.substr(i, j - i), i});
      i = j;
    } else if (c == ';') {
      out.push_back({TokenKind::kSemicolon, s.substr(i, 1), i});
      ++i;
    } else if (c == '=' && at(i + 1) == '=') {
      out.push_back({TokenKind::kBad, s.substr(i, 2), i, "SQLite-only; write ="});
      i += 2;
    } else {
      out.push_back({TokenKind::kSymbol, s.substr(i, 1), i});
      ++i;
    }
  }
  return out;
}

std::string Upper(std::string_view word) {
  std::string out(word);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool IsSymbol(const Token& t, char c) {
  return t.kind == TokenKind::kSymbol && t.text.size() == 1 && t.text[0] == c;
}

// ---------------------------------------------------------------------------------------------
// The subset. Each entry says what to write instead; docs/store.md lists the same rules.

struct Rule {
  std::string_view word;
  std::string_view reason;
};

constexpr std::string_view kUseAppIds =
    "ids come from the application (a UUID) or a natural key, not the engine";
constexpr std::string_view kUseBigint = "32-bit or smaller on PostgreSQL; use BIGINT";
constexpr std::string_view kUseText =
    "use TEXT (SQLite ignores declared lengths; check lengths in code or with "
    "CHECK (length(x) <= n))";
constexpr std::string_view kUseClock =
    "time comes from the injected Clock: bind BIGINT unix seconds";
constexpr std::string_view kNoBool = "SQLite has no boolean type; use BIGINT 0/1";
constexpr std::string_view kSqliteOnly = "SQLite-only";
constexpr std::string_view kPostgresOnly = "PostgreSQL-only";

// Words rejected wherever they appear outside literals and quoted identifiers.
constexpr std::array kWordRules = {
    Rule{"AUTOINCREMENT", kUseAppIds},
    Rule{"SERIAL", kUseAppIds},
    Rule{"BIGSERIAL", kUseAppIds},
    Rule{"SMALLSERIAL", kUseAppIds},
    Rule{"GENERATED", "generated and identity columns differ between engines; compute in code"},
    Rule{"ROWID", "SQLite-only; declare a key column and use it"},
    Rule{"_ROWID_", "SQLite-only; declare a key column and use it"},
    Rule{"OID", "SQLite-only; declare a key column and use it"},
    Rule{"WITHOUT", "WITHOUT ROWID is SQLite-only"},
    Rule{"STRICT", "STRICT tables are SQLite-only"},
    Rule{"INDEXED", "INDEXED BY is SQLite-only"},
    Rule{"VIRTUAL", "virtual tables are SQLite-only"},
    Rule{"TRIGGER", "triggers are written differently on each engine; do it in code"},
    Rule{"GLOB", kSqliteOnly},
    Rule{"REGEXP", kSqliteOnly},
    Rule{"ILIKE", "PostgreSQL-only; compare lower(x)"},
    Rule{"SIMILAR", kPostgresOnly},
    Rule{"COLLATE", "collations differ between engines; compare lower(x)"},
    Rule{"INT", kUseBigint},
    Rule{"INTEGER", kUseBigint},
    Rule{"SMALLINT", kUseBigint},
    Rule{"TINYINT", kUseBigint},
    Rule{"MEDIUMINT", kUseBigint},
    Rule{"REAL", "32-bit on PostgreSQL; use DOUBLE PRECISION"},
    Rule{"FLOAT", "use DOUBLE PRECISION"},
    Rule{"NUMERIC",
         "exact on PostgreSQL but floating point on SQLite; use BIGINT (e.g. cents) or DOUBLE "
         "PRECISION"},
    Rule{"DECIMAL",
         "exact on PostgreSQL but floating point on SQLite; use BIGINT (e.g. cents) or DOUBLE "
         "PRECISION"},
    Rule{"VARCHAR", kUseText},
    Rule{"CHAR", kUseText},
    Rule{"CHARACTER", kUseText},
    Rule{"NVARCHAR", kUseText},
    Rule{"CLOB", kUseText},
    Rule{"BOOLEAN", kNoBool},
    Rule{"BOOL", kNoBool},
    Rule{"TRUE", kNoBool},
    Rule{"FALSE", kNoBool},
    Rule{"BYTEA", "write BLOB (the PostgreSQL backend maps BLOB to bytea)"},
    Rule{"JSONB", "store JSON as TEXT and parse it in C++"},
    Rule{"TIMESTAMP", kUseClock},
    Rule{"TIMESTAMPTZ", kUseClock},
    Rule{"DATETIME", kUseClock},
    Rule{"INTERVAL", kUseClock},
    Rule{"CURRENT_TIMESTAMP", kUseClock},
    Rule{"CURRENT_DATE", kUseClock},
    Rule{"CURRENT_TIME", kUseClock},
    Rule{"LOCALTIME", kUseClock},
    Rule{"LOCALTIMESTAMP", kUseClock},
};

// Words rejected as the first word of a statement.
constexpr std::string_view kTxReason = "transactions belong to Database::Transact";
constexpr std::string_view kAdminReason = "engine administration, not application SQL";
constexpr std::array kFirstWordRules = {
    Rule{"BEGIN", kTxReason},
    Rule{"COMMIT", kTxReason},
    Rule{"END", kTxReason},
    Rule{"ROLLBACK", kTxReason},
    Rule{"SAVEPOINT", kTxReason},
    Rule{"RELEASE", kTxReason},
    Rule{"START", kTxReason},
    Rule{"PRAGMA", kAdminReason},
    Rule{"ATTACH", kAdminReason},
    Rule{"DETACH", kAdminReason},
    Rule{"VACUUM", kAdminReason},
    Rule{"REINDEX", kAdminReason},
    Rule{"ANALYZE", kAdminReason},
    Rule{"EXPLAIN", kAdminReason},
    Rule{"REPLACE", "SQLite-only; write INSERT ... ON CONFLICT (key) DO UPDATE SET ..."},
};

// Words rejected when called as functions (so a column may still be named "date").
constexpr std::string_view kTimeFn =
    "time functions differ between engines; bind BIGINT unix "
    "seconds from the injected Clock and compare numbers";
constexpr std::array kFunctionRules = {
    Rule{"DATE", kTimeFn},
    Rule{"TIME", kTimeFn},
    Rule{"DATETIME", kTimeFn},
    Rule{"JULIANDAY", kTimeFn},
    Rule{"STRFTIME", kTimeFn},
    Rule{"UNIXEPOCH", kTimeFn},
    Rule{"NOW", kTimeFn},
    Rule{"TO_TIMESTAMP", kTimeFn},
    Rule{"EXTRACT", kTimeFn},
    Rule{"IFNULL", "write COALESCE"},
    Rule{"NVL", "write COALESCE"},
    Rule{"IIF", "write CASE WHEN ... THEN ... ELSE ... END"},
    Rule{"GREATEST", "PostgreSQL-only; write CASE"},
    Rule{"LEAST", "PostgreSQL-only; write CASE"},
    Rule{"GROUP_CONCAT", "aggregate strings in C++"},
    Rule{"STRING_AGG", "aggregate strings in C++"},
    Rule{"CONCAT", "write ||"},
    Rule{"INSTR", "differs between engines; search in C++"},
    Rule{"STRPOS", "differs between engines; search in C++"},
    Rule{"PRINTF", "format in C++"},
    Rule{"FORMAT", "format in C++"},
    Rule{"LAST_INSERT_ROWID", "SQLite-only; use RETURNING"},
    Rule{"CHANGES", "SQLite-only; use the count Session::Execute returns"},
    Rule{"TOTAL_CHANGES", "SQLite-only; use the count Session::Execute returns"},
    Rule{"RANDOM", "randomness comes from the injected Random; bind it"},
    Rule{"RANDOMBLOB", "randomness comes from the injected Random; bind it"},
    Rule{"GEN_RANDOM_UUID", "randomness comes from the injected Random; bind it"},
    Rule{"HEX", kSqliteOnly},
    Rule{"UNHEX", kSqliteOnly},
    Rule{"ZEROBLOB", kSqliteOnly},
    Rule{"TYPEOF", kSqliteOnly},
    Rule{"QUOTE", kSqliteOnly},
    Rule{"TOTAL", kSqliteOnly},
    Rule{"LIKELY", kSqliteOnly},
    Rule{"UNLIKELY", kSqliteOnly},
    Rule{"LIKELIHOOD", kSqliteOnly},
};

template <size_t N>
std::optional<std::string_view> Find(const std::array<Rule, N>& rules, std::string_view word) {
  for (const Rule& r : rules) {
    if (r.word == word) return r.reason;
  }
  return std::nullopt;
}

std::unexpected<Error> NotPortable(const Token& t, std::string_view reason) {
  return Fail(ErrorCode::kInvalidArgument, "not portable SQL: {} at offset {}: {}", t.text,
              t.offset, reason);
}

// The token at `k`, or nullptr past the end.
const Token* NextToken(std::span<const Token> tokens, size_t k) {
  return k < tokens.size() ? &tokens[k] : nullptr;
}

Result<void> CheckStatement(std::span<const Token> t) {
  if (t.empty()) return Ok();
  if (t[0].kind == TokenKind::kWord) {
    if (auto reason = Find(kFirstWordRules, Upper(t[0].text))) return NotPortable(t[0], *reason);
  }
  const std::string first = t[0].kind == TokenKind::kWord ? Upper(t[0].text) : "";
  int depth = 0;  // parenthesis depth of t[k]
  for (size_t k = 0; k < t.size(); ++k) {
    const Token& tok = t[k];
    if (IsSymbol(tok, '(')) ++depth;
    if (IsSymbol(tok, ')')) --depth;
    if (tok.kind != TokenKind::kWord) continue;
    const std::string word = Upper(tok.text);
    if (auto reason = Find(kWordRules, word)) return NotPortable(tok, *reason);
    const Token* next = NextToken(t, k + 1);
    const bool called = next != nullptr && IsSymbol(*next, '(');
    if (called) {
      if (auto reason = Find(kFunctionRules, word)) return NotPortable(tok, *reason);
      if (word.starts_with("JSON")) {
        return NotPortable(tok, "JSON functions differ between engines; parse JSON in C++");
      }
      if (word == "MAX" || word == "MIN") {
        // The two-argument scalar form is SQLite-only (PostgreSQL has GREATEST/LEAST); the
        // one-argument aggregate is fine.
        int inner = 0;
        for (size_t m = k + 1; m < t.size(); ++m) {
          if (IsSymbol(t[m], '(')) ++inner;
          if (IsSymbol(t[m], ')') && --inner == 0) break;
          if (inner == 1 && IsSymbol(t[m], ',')) {
            return NotPortable(tok, "the two-argument form is SQLite-only; write CASE");
          }
        }
      }
    }
    // X'00ff' blob literals.
    if (word == "X" && next != nullptr && next->kind == TokenKind::kString &&
        next->offset == tok.offset + 1) {
      return NotPortable(tok, "blob literals are SQLite-only; bind the bytes");
    }
    if ((word == "INSERT" || word == "UPDATE") && next != nullptr &&
        next->kind == TokenKind::kWord && Upper(next->text) == "OR") {
      return NotPortable(*next,
                         "INSERT OR ... and UPDATE OR ... are SQLite-only; write ON CONFLICT (key) "
                         "DO NOTHING or DO UPDATE");
    }
    if (word == "ON" && next != nullptr && next->kind == TokenKind::kWord &&
        Upper(next->text) == "CONFLICT") {
      const Token* after = NextToken(t, k + 2);
      if (after != nullptr && after->kind == TokenKind::kWord) {
        const std::string a = Upper(after->text);
        if (a == "ROLLBACK" || a == "ABORT" || a == "FAIL" || a == "IGNORE" || a == "REPLACE") {
          return NotPortable(*after, "conflict clauses on constraints are SQLite-only");
        }
        const Token* after2 = NextToken(t, k + 3);
        if (a == "DO" && after2 != nullptr && after2->kind == TokenKind::kWord &&
            Upper(after2->text) == "UPDATE") {
          return NotPortable(*after,
                             "DO UPDATE without a conflict target is SQLite-only; write ON "
                             "CONFLICT (column, ...) DO UPDATE");
        }
      }
    }
    if (word == "LIMIT" && depth == 0 && (first == "UPDATE" || first == "DELETE")) {
      return NotPortable(tok,
                         "UPDATE/DELETE ... LIMIT is SQLite-only; pick the keys in a "
                         "subquery: WHERE id IN (SELECT id ... LIMIT n)");
    }
    if (word == "LIMIT") {
      // LIMIT offset, count is SQLite/MySQL-only.
      int inner = 0;
      for (size_t m = k + 1; m < t.size(); ++m) {
        if (IsSymbol(t[m], '(')) ++inner;
        if (IsSymbol(t[m], ')') && --inner < 0) break;
        if (inner == 0 && t[m].kind == TokenKind::kWord && Upper(t[m].text) == "OFFSET") break;
        if (inner == 0 && IsSymbol(t[m], ',')) {
          return NotPortable(tok, "LIMIT with a comma is SQLite-only; write LIMIT n OFFSET m");
        }
      }
    }
  }
  return Ok();
}

// Statements as token ranges; empty statements (";;") are dropped.
std::vector<std::span<const Token>> SplitTokens(const std::vector<Token>& tokens) {
  std::vector<std::span<const Token>> out;
  size_t begin = 0;
  for (size_t k = 0; k <= tokens.size(); ++k) {
    if (k == tokens.size() || tokens[k].kind == TokenKind::kSemicolon) {
      if (k > begin) out.emplace_back(tokens.data() + begin, k - begin);
      begin = k + 1;
    }
  }
  return out;
}

Result<void> CheckLexical(const std::vector<Token>& tokens) {
  for (const Token& t : tokens) {
    if (t.kind == TokenKind::kUnterminated) {
      return Fail(ErrorCode::kInvalidArgument, "SQL: unterminated {} starting at offset {}",
                  t.reason, t.offset);
    }
    if (t.kind == TokenKind::kBad) return NotPortable(t, t.reason);
  }
  return Ok();
}

}  // namespace

Result<void> CheckPortableSql(std::string_view sql) {
  const std::vector<Token> tokens = Lex(sql);
  MOAT_TRY(CheckLexical(tokens));
  for (std::span<const Token> statement : SplitTokens(tokens)) {
    MOAT_TRY(CheckStatement(statement));
  }
  return Ok();
}

Result<std::vector<std::string_view>> SplitStatements(std::string_view sql) {
  const std::vector<Token> tokens = Lex(sql);
  for (const Token& t : tokens) {
    if (t.kind == TokenKind::kUnterminated) {
      return Fail(ErrorCode::kInvalidArgument, "SQL: unterminated {} starting at offset {}",
                  t.reason, t.offset);
    }
  }
  std::vector<std::string_view> out;
  for (std::span<const Token> st : SplitTokens(tokens)) {
    const size_t begin = st.front().offset;
    const size_t end = st.back().offset + st.back().text.size();
    out.push_back(sql.substr(begin, end - begin));
  }
  return out;
}

std::string MainVerb(std::string_view statement) {
  const std::vector<Token> tokens = Lex(statement);
  size_t k = 0;
  while (k < tokens.size() && tokens[k].kind != TokenKind::kWord) ++k;
  if (k == tokens.size()) return "";
  std::string first = Upper(tokens[k].text);
  if (first != "WITH") return first;
  // Common table expressions are parenthesised, so the main verb is the first of these words
  // at parenthesis depth 0.
  int depth = 0;
  for (++k; k < tokens.size(); ++k) {
    if (IsSymbol(tokens[k], '(')) ++depth;
    if (IsSymbol(tokens[k], ')')) --depth;
    if (depth == 0 && tokens[k].kind == TokenKind::kWord) {
      std::string w = Upper(tokens[k].text);
      if (w == "SELECT" || w == "INSERT" || w == "UPDATE" || w == "DELETE" || w == "VALUES") {
        return w;
      }
    }
  }
  return first;
}

size_t CountPlaceholders(std::string_view statement) {
  const std::vector<Token> tokens = Lex(statement);
  return static_cast<size_t>(std::count_if(tokens.begin(), tokens.end(), [](const Token& t) {
    return t.kind == TokenKind::kPlaceholder;
  }));
}

std::string NumberPlaceholders(std::string_view statement) {
  std::string out;
  out.reserve(statement.size() + 16);
  size_t copied = 0;
  size_t n = 0;
  for (const Token& t : Lex(statement)) {
    if (t.kind != TokenKind::kPlaceholder) continue;
    out.append(statement.substr(copied, t.offset - copied));
    out.append(fmt::format("${}", ++n));
    copied = t.offset + 1;
  }
  out.append(statement.substr(copied));
  return out;
}

}  // namespace moat::store
