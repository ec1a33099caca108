#include "store/database.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "store/backend.h"

namespace moat::store {
namespace {

// Row::at with a bad index means the SQL in the code and the code reading it disagree about
// the number of columns: a bug, not bad input, so it stops the program loudly.
[[noreturn]] void ColumnOutOfRange(size_t column, size_t size) {
  std::fprintf(stderr, "moat::store::Row: column %zu out of range (row has %zu columns)\n", column,
               size);
  std::abort();
}

template <typename T>
Result<T> Get(const std::vector<Value>& values, size_t column, std::string_view want) {
  if (column >= values.size()) {
    return Fail(ErrorCode::kInternal, "column {} out of range (row has {} columns)", column,
                values.size());
  }
  if (const T* v = std::get_if<T>(&values[column])) return *v;
  return Fail(ErrorCode::kInternal, "column {}: expected {}, found {}", column, want,
              ValueTypeName(values[column]));
}

// Validates UTF-8 strictly: no overlong forms, no surrogates, nothing above U+10FFFF.
// Returns the offset of the first bad byte, or npos.
size_t FindInvalidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c1 < lo || c1 > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      const unsigned char ck = static_cast<unsigned char>(s[i + k]);
      if (ck < 0x80 || ck > 0xBF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

}  // namespace

int64_t UnixSeconds(SystemTime t) {
  return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}

SystemTime FromUnixSeconds(int64_t seconds) { return SystemTime(std::chrono::seconds(seconds)); }

bool Row::IsNull(size_t column) const { return std::holds_alternative<std::monostate>(at(column)); }

const Value& Row::at(size_t column) const {
  if (column >= values_.size()) ColumnOutOfRange(column, values_.size());
  return values_[column];
}

Result<int64_t> Row::Int(size_t column) const { return Get<int64_t>(values_, column, "integer"); }
Result<double> Row::Double(size_t column) const { return Get<double>(values_, column, "double"); }
Result<std::string> Row::Text(size_t column) const {
  return Get<std::string>(values_, column, "text");
}
Result<std::vector<uint8_t>> Row::Blob(size_t column) const {
  return Get<std::vector<uint8_t>>(values_, column, "blob");
}

namespace {
Result<Row> ExactlyOne(Result<std::vector<Row>> rows, std::string_view sql) {
  if (!rows) return Fail(std::move(rows).error());
  if (rows->empty()) {
    return Fail(ErrorCode::kNotFound, "no row (in: {})", StatementForMessage(sql));
  }
  if (rows->size() > 1) {
    return Fail(ErrorCode::kInternal, "expected one row, got {} (in: {})", rows->size(),
                StatementForMessage(sql));
  }
  return std::move(rows->front());
}
}  // namespace

Result<Row> Session::QueryOne(std::string_view sql, std::span<const Value> params) {
  return ExactlyOne(DoQuery(sql, params), sql);
}

Result<Row> Database::QueryOne(std::string_view sql, std::span<const Value> params) {
  return ExactlyOne(DoQuery(sql, params), sql);
}

std::string_view ValueTypeName(const Value& value) {
  switch (value.index()) {
    case 0:
      return "NULL";
    case 1:
      return "integer";
    case 2:
      return "double";
    case 3:
      return "text";
    default:
      return "blob";
  }
}

Result<void> CheckBindable(const Value& value, size_t index) {
  if (const std::string* text = std::get_if<std::string>(&value)) {
    if (size_t nul = text->find('\0'); nul != std::string::npos) {
      return Fail(ErrorCode::kInvalidArgument,
                  "parameter {}: text holds a NUL byte at offset {} (PostgreSQL TEXT cannot "
                  "store it; bind binary data as a blob)",
                  index, nul);
    }
    if (size_t bad = FindInvalidUtf8(*text); bad != std::string_view::npos) {
      return Fail(ErrorCode::kInvalidArgument,
                  "parameter {}: text is not valid UTF-8 at offset {} (bind binary data as a "
                  "blob)",
                  index, bad);
    }
  } else if (const double* d = std::get_if<double>(&value)) {
    if (std::isnan(*d)) {
      return Fail(ErrorCode::kInvalidArgument, "parameter {}: NaN (SQLite would store it as NULL)",
                  index);
    }
  }
  return Ok();
}

std::string StatementForMessage(std::string_view sql) {
  constexpr size_t kMax = 120;
  std::string out;
  bool space = false;
  for (char c : sql) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    if (out.size() >= kMax) {
      out.append("...");
      break;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace moat::store
