// ObjectReader: strict reading of a JSON object from untrusted input. Each accessor checks
// presence, type and bounds and names the field's JSON path in its error; NoOtherFields()
// then rejects anything the reader did not ask for. Used by the API bodies and evidence.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/json.h"

namespace moat::formats {

// kInvalidArgument "<path>: expected <type>, got <actual>" unless `json` has type `type`
// (integers satisfy number_integer whether signed or unsigned).
Result<void> ExpectType(const Json& json, Json::value_t type, std::string_view path);

class ObjectReader {
 public:
  // `json` must outlive the reader.
  ObjectReader(const Json& json, std::string_view path);

  // Fails if the value is not an object.
  Result<void> status() const;

  // Strings: required ones must be non-empty; all are bounded by `max_bytes`.
  Result<std::string> RequiredString(std::string_view key, size_t max_bytes);
  Result<std::string> OptionalString(std::string_view key, size_t max_bytes);
  Result<int64_t> RequiredInt(std::string_view key, int64_t min, int64_t max);
  Result<std::optional<int64_t>> OptionalInt(std::string_view key, int64_t min, int64_t max);
  Result<bool> OptionalBool(std::string_view key, bool default_value);
  // The raw member (nullptr if absent); marks it as read.
  const Json* Member(std::string_view key);
  void MarkSeen(std::string_view key) { seen_.insert(std::string(key)); }

  // kInvalidArgument "<path>: unknown field 'x'" for the first member not read.
  Result<void> NoOtherFields() const;

  std::string PathOf(std::string_view key) const { return JsonPathJoin(path_, key); }

 private:
  const Json& json_;
  std::string path_;
  std::set<std::string> seen_;
};

}  // namespace moat::formats
