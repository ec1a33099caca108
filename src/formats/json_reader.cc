#include "formats/json_reader.h"

#include <algorithm>
#include <limits>

namespace moat::formats {

Result<void> ExpectType(const Json& json, Json::value_t type, std::string_view path) {
  bool ok = json.type() == type;
  if (type == Json::value_t::number_integer) ok = json.is_number_integer();
  if (!ok) {
    return Fail(ErrorCode::kInvalidArgument, "{}: expected {}, got {}", path,
                JsonTypeName(Json(type)), JsonTypeName(json));
  }
  return Ok();
}

ObjectReader::ObjectReader(const Json& json, std::string_view path) : json_(json), path_(path) {}

Result<void> ObjectReader::status() const {
  return ExpectType(json_, Json::value_t::object, path_.empty() ? "body" : path_);
}

const Json* ObjectReader::Member(std::string_view key) {
  if (!json_.is_object()) return nullptr;
  auto it = json_.find(key);
  if (it == json_.end()) return nullptr;
  MarkSeen(key);
  return &*it;
}

Result<std::string> ObjectReader::OptionalString(std::string_view key, size_t max_bytes) {
  const Json* v = Member(key);
  if (v == nullptr) return std::string();
  MOAT_TRY(ExpectType(*v, Json::value_t::string, PathOf(key)));
  const auto& s = v->get_ref<const std::string&>();
  if (s.size() > max_bytes) {
    return Fail(ErrorCode::kInvalidArgument, "{}: longer than {} bytes", PathOf(key), max_bytes);
  }
  return s;
}

Result<std::string> ObjectReader::RequiredString(std::string_view key, size_t max_bytes) {
  if (json_.is_object() && !json_.contains(key)) {
    return Fail(ErrorCode::kInvalidArgument, "{}: missing required field '{}'",
                path_.empty() ? "body" : path_, key);
  }
  MOAT_ASSIGN_OR_RETURN(std::string s, OptionalString(key, max_bytes));
  if (s.empty()) return Fail(ErrorCode::kInvalidArgument, "{}: must not be empty", PathOf(key));
  return s;
}

Result<std::optional<int64_t>> ObjectReader::OptionalInt(std::string_view key, int64_t min,
                                                         int64_t max) {
  const Json* v = Member(key);
  if (v == nullptr) return std::optional<int64_t>();
  MOAT_TRY(ExpectType(*v, Json::value_t::number_integer, PathOf(key)));
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return Fail(ErrorCode::kInvalidArgument, "{}: out of range {}..{}", PathOf(key), min, max);
  }
  int64_t n = v->get<int64_t>();
  if (n < min || n > max) {
    return Fail(ErrorCode::kInvalidArgument, "{}: {} is out of range {}..{}", PathOf(key), n, min,
                max);
  }
  return std::optional<int64_t>(n);
}

Result<int64_t> ObjectReader::RequiredInt(std::string_view key, int64_t min, int64_t max) {
  if (json_.is_object() && !json_.contains(key)) {
    return Fail(ErrorCode::kInvalidArgument, "{}: missing required field '{}'",
                path_.empty() ? "body" : path_, key);
  }
  MOAT_ASSIGN_OR_RETURN(auto v, OptionalInt(key, min, max));
  return *v;
}

Result<bool> ObjectReader::OptionalBool(std::string_view key, bool default_value) {
  const Json* v = Member(key);
  if (v == nullptr) return default_value;
  MOAT_TRY(ExpectType(*v, Json::value_t::boolean, PathOf(key)));
  return v->get<bool>();
}

Result<void> ObjectReader::NoOtherFields() const {
  if (!json_.is_object()) return Ok();
  for (auto it = json_.begin(); it != json_.end(); ++it) {
    if (!seen_.contains(it.key())) {
      return Fail(ErrorCode::kInvalidArgument, "{}: unknown field '{}'",
                  path_.empty() ? "body" : path_, it.key().substr(0, 64));
    }
  }
  return Ok();
}

std::string QuoteForMessage(std::string_view s) {
  constexpr size_t kMax = 80;
  std::string out = "'";
  for (char c : s.substr(0, kMax)) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  out += s.size() > kMax ? "...'" : "'";
  return out;
}

bool HasControlCharacter(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

const Json* FindMember(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string DocumentReader::Context(std::string_view path) const {
  return path.empty() ? std::string(document_) : fmt::format("{}: {}", document_, path);
}

std::unexpected<Error> DocumentReader::Make(ErrorCode code, std::string_view path,
                                            std::string detail) const {
  return Fail(Error(code, fmt::format("{}: {}", Context(path), detail)));
}

std::unexpected<Error> DocumentReader::WrongType(std::string_view path, std::string_view expected,
                                                 const Json& value) const {
  return Invalid(path, "expected {}, got {}", expected, JsonTypeName(value));
}

Result<void> DocumentReader::KnownFields(const Json& object, std::string_view path,
                                         std::span<const std::string_view> known) const {
  for (const auto& [key, unused] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return Invalid(path, "unknown field {}", QuoteForMessage(key));
    }
  }
  return Ok();
}

Result<std::string> DocumentReader::ReadString(const Json& value, std::string_view path,
                                               size_t max_bytes) const {
  if (!value.is_string()) return WrongType(path, "a string", value);
  const auto& s = value.get_ref<const std::string&>();
  if (s.size() > max_bytes) {
    return TooBig(path, "{} bytes exceed the limit of {}", s.size(), max_bytes);
  }
  return s;
}

Result<int64_t> DocumentReader::ReadInt(const Json& value, std::string_view path, int64_t min,
                                        int64_t max) const {
  if (!value.is_number_integer()) return WrongType(path, "an integer", value);
  // An unsigned value above INT64_MAX is out of every range we accept.
  if (value.is_number_unsigned() &&
      value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Invalid(path, "{} is out of range {}..{}", value.dump(), min, max);
  }
  int64_t v = value.get<int64_t>();
  if (v < min || v > max) return Invalid(path, "{} is out of range {}..{}", v, min, max);
  return v;
}

Result<bool> DocumentReader::ReadBool(const Json& value, std::string_view path) const {
  if (!value.is_boolean()) return WrongType(path, "a boolean", value);
  return value.get<bool>();
}

Result<const Json::array_t*> DocumentReader::ReadArray(const Json& value, std::string_view path,
                                                       size_t max_items) const {
  if (!value.is_array()) return WrongType(path, "an array", value);
  const auto& a = value.get_ref<const Json::array_t&>();
  if (a.size() > max_items) {
    return TooBig(path, "{} items exceed the limit of {}", a.size(), max_items);
  }
  return &a;
}

Result<void> DocumentReader::ExpectVersion(const Json& value, std::string_view path,
                                           int64_t supported) const {
  if (!value.is_number_integer()) return WrongType(path, "an integer", value);
  if (value != supported) {
    return Invalid(path, "{} is not supported (expected {})", value.dump(), supported);
  }
  return Ok();
}

}  // namespace moat::formats
