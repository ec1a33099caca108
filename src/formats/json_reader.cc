#include "formats/json_reader.h"

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

}  // namespace moat::formats
