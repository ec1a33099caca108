// Helpers for Database implementations (not for handlers): the checks every backend applies
// to bound values, and how statements appear in error messages. Pure; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/error.h"
#include "store/database.h"

namespace moat::store {

// "NULL", "integer", "double", "text" or "blob".
std::string_view ValueTypeName(const Value& value);

// Checks that `value` (parameter number `index`, from 1) means the same on every engine: text is
// valid UTF-8 without NUL bytes, a double is not NaN. kInvalidArgument naming the parameter.
Result<void> CheckBindable(const Value& value, size_t index);

// The statement for an error message: whitespace runs collapsed, cut after 120 characters. SQL
// text holds no values (they are bound), so this never leaks data.
std::string StatementForMessage(std::string_view sql);

}  // namespace moat::store
