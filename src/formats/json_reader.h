// Strict reading of JSON values from untrusted input, in two message styles:
// - ObjectReader reads one object: each accessor checks presence, type and bounds and names
//   the field's JSON path in its error; NoOtherFields() then rejects anything the reader did
//   not ask for. Used by the API bodies, evidence and the operator config.
// - DocumentReader reads the values of a named file format (app manifests, hardware
//   definitions) one at a time, with the document's name at the start of every message.
// The two word their errors differently, and both wordings are relied on exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>

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

// Quotes an untrusted string for a message: in single quotes, cut after 80 bytes (marked by
// "..." inside the quotes), control characters as \xNN so that input cannot forge log lines.
std::string QuoteForMessage(std::string_view s);

// True if `s` holds an ASCII control character (below 0x20, or DEL).
bool HasControlCharacter(std::string_view s);

// The member `key` of `object`, or nullptr if it is absent or `object` is not an object.
const Json* FindMember(const Json& object, std::string_view key);

// DocumentReader: strict reading of the values of one named file format (an app manifest, a
// hardware definition), one value at a time, with messages in that format's style:
//   "<document>: <path>: <detail>", or "<document>: <detail>" at the top level,
// e.g. "app manifest: Capabilities.Gpio: expected an array, got object". Unlike ObjectReader it
// tracks nothing: the caller checks the members against the known ones first (KnownFields), so
// that an unknown field is refused before any value is read. Sizes over a limit fail with
// kLimitExceeded, everything else with kInvalidArgument.
class DocumentReader {
 public:
  // `document` ("app manifest") must outlive the reader.
  constexpr explicit DocumentReader(std::string_view document) : document_(document) {}

  // "<document>: <path>", or "<document>" for the top level: context for an error from
  // elsewhere (Error::WithContext).
  std::string Context(std::string_view path) const;

  template <typename... Args>
  std::unexpected<Error> Invalid(std::string_view path, fmt::format_string<Args...> format,
                                 Args&&... args) const {
    return Make(ErrorCode::kInvalidArgument, path,
                fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  std::unexpected<Error> TooBig(std::string_view path, fmt::format_string<Args...> format,
                                Args&&... args) const {
    return Make(ErrorCode::kLimitExceeded, path, fmt::format(format, std::forward<Args>(args)...));
  }
  // "expected <expected>, got <JSON type>"; `expected` carries its article ("an integer").
  std::unexpected<Error> WrongType(std::string_view path, std::string_view expected,
                                   const Json& value) const;

  // "unknown field 'x'" for the first member of `object` that is not in `known`.
  Result<void> KnownFields(const Json& object, std::string_view path,
                           std::span<const std::string_view> known) const;

  // "expected a string"; "<n> bytes exceed the limit of <max_bytes>".
  Result<std::string> ReadString(const Json& value, std::string_view path, size_t max_bytes) const;
  // "expected an integer"; "<value> is out of range <min>..<max>".
  Result<int64_t> ReadInt(const Json& value, std::string_view path, int64_t min, int64_t max) const;
  // "expected a boolean".
  Result<bool> ReadBool(const Json& value, std::string_view path) const;
  // "expected an array"; "<n> items exceed the limit of <max_items>". Points into `value`.
  Result<const Json::array_t*> ReadArray(const Json& value, std::string_view path,
                                         size_t max_items) const;
  // A format version, which must be the integer `supported`: "expected an integer";
  // "<value> is not supported (expected <supported>)".
  Result<void> ExpectVersion(const Json& value, std::string_view path, int64_t supported) const;

 private:
  std::unexpected<Error> Make(ErrorCode code, std::string_view path, std::string detail) const;

  std::string_view document_;
};

}  // namespace moat::formats
