#include "core/json.h"

#include <set>
#include <vector>

namespace moat {
namespace {

// A SAX handler that builds a Json value while enforcing depth and duplicate-key rules.
// nlohmann's DOM parser silently keeps the last of duplicate keys; we refuse them instead.
class StrictBuilder final : public nlohmann::json_sax<Json> {
 public:
  explicit StrictBuilder(size_t max_depth) : max_depth_(max_depth) {}

  bool null() override { return Add(Json(nullptr)); }
  bool boolean(bool v) override { return Add(Json(v)); }
  bool number_integer(number_integer_t v) override { return Add(Json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return Add(Json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return Add(Json(v)); }
  bool string(string_t& v) override { return Add(Json(std::move(v))); }
  bool binary(binary_t&) override {
    error_ = "binary values are not JSON";
    return false;
  }

  bool start_object(std::size_t) override { return Open(Json::object()); }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open(Json::array()); }
  bool end_array() override { return Close(); }

  bool key(string_t& k) override {
    Frame& f = stack_.back();
    if (!f.keys.insert(k).second) {
      error_ = "duplicate key '" + PathOf(k) + "'";
      return false;
    }
    f.pending_key = k;
    return true;
  }

  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    error_ = ex.what();
    // nlohmann's messages start with "[json.exception.parse_error.101] parse error at ...".
    if (auto p = error_.find("] "); p != std::string::npos) error_ = error_.substr(p + 2);
    return false;
  }

  Json TakeResult() { return std::move(root_); }
  const std::string& error() const { return error_; }

 private:
  struct Frame {
    Json* value;
    std::set<std::string> keys;
    std::string pending_key;
  };

  std::string PathOf(const std::string& key) const {
    std::string path;
    for (size_t i = 0; i + 1 < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      if (f.value->is_object()) {
        path = JsonPathJoin(path, f.pending_key);
      } else {
        path = JsonPathIndex(path, f.value->size() - 1);
      }
    }
    return JsonPathJoin(path, key);
  }

  Json* Insert(Json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Frame& f = stack_.back();
    if (f.value->is_object()) {
      Json& slot = (*f.value)[f.pending_key];
      slot = std::move(v);
      return &slot;
    }
    f.value->push_back(std::move(v));
    return &f.value->back();
  }

  bool Add(Json&& v) {
    Insert(std::move(v));
    return true;
  }

  bool Open(Json&& container) {
    if (stack_.size() >= max_depth_) {
      error_ = "nesting deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    Json* slot = Insert(std::move(container));
    stack_.push_back(Frame{slot, {}, {}});
    return true;
  }

  bool Close() {
    stack_.pop_back();
    return true;
  }

  size_t max_depth_;
  Json root_;
  std::vector<Frame> stack_;
  std::string error_;
};

}  // namespace

Result<Json> ParseJson(std::string_view text, std::string_view what, JsonLimits limits) {
  if (text.size() > limits.max_bytes) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} bytes exceeds the limit of {} bytes", what,
                text.size(), limits.max_bytes);
  }
  StrictBuilder builder(limits.max_depth);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &builder, nlohmann::detail::input_format_t::json,
                         /*strict=*/true);
  } catch (const std::exception& e) {  // third-party exceptions stop at this boundary
    return Fail(ErrorCode::kInvalidArgument, "{}: invalid JSON: {}", what, e.what());
  }
  if (!ok) {
    ErrorCode code = builder.error().starts_with("nesting") ? ErrorCode::kLimitExceeded
                                                            : ErrorCode::kInvalidArgument;
    return Fail(code, "{}: invalid JSON: {}", what, builder.error());
  }
  return builder.TakeResult();
}

std::string DumpJson(const Json& value) {
  // Replace invalid UTF-8 rather than throw; our own values are always valid.
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string JsonPathJoin(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return std::string(parent) + "." + std::string(key);
}

std::string JsonPathIndex(std::string_view parent, size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

std::string_view JsonTypeName(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::string:
      return "string";
    case Json::value_t::array:
      return "array";
    case Json::value_t::object:
      return "object";
    default:
      return "value";
  }
}

}  // namespace moat
