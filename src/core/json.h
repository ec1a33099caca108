// Strict JSON reading for untrusted input.
//
// ParseJson enforces a size limit and a nesting-depth limit, rejects duplicate object keys
// (which different parsers resolve differently — a classic smuggling vector), and rejects
// invalid UTF-8. Errors name the position and, for duplicates, the key path.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

#include "core/error.h"

namespace moat {

using Json = nlohmann::json;

struct JsonLimits {
  size_t max_bytes = 1 << 20;  // 1 MiB
  size_t max_depth = 32;
};

// Parses `text` as one JSON value. `what` names the document in error messages.
Result<Json> ParseJson(std::string_view text, std::string_view what, JsonLimits limits = {});

// Serialises compactly (no spaces), keys sorted as nlohmann::json stores them.
std::string DumpJson(const Json& value);

// Helpers for readers of JSON objects that must reject anything they do not know.
// A JsonPath renders like "Capabilities.Gpio[2]".
std::string JsonPathJoin(std::string_view parent, std::string_view key);
std::string JsonPathIndex(std::string_view parent, size_t index);

// The JSON type name ("string", "number", "object", ...) for messages.
std::string_view JsonTypeName(const Json& value);

}  // namespace moat
