#include "formats/failure_event.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <initializer_list>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

#include "core/encoding.h"
#include "crypto/digest.h"
#include "formats/json_reader.h"

namespace moat::formats {
namespace {

constexpr size_t kMaxModuleBytes = 255;
constexpr size_t kMaxBuildIdDigits = 128;
constexpr size_t kMaxSymbolBytes = 512;
constexpr int kMaxSignal = 64;
constexpr int kMaxExitStatus = 255;
constexpr int kMaxErrno = 4095;
constexpr int kSigKill = 9;
// Frames that go into a StackSignature: deeper frames vary with how the app got there.
constexpr size_t kSignatureFrames = 8;

constexpr std::array<std::pair<FailureKind, std::string_view>, 5> kKindNames = {{
    {FailureKind::kAppCrash, "app_crash"},
    {FailureKind::kAppExit, "app_exit"},
    {FailureKind::kAppMemoryLimit, "app_memory_limit"},
    {FailureKind::kEventsDropped, "events_dropped"},
    {FailureKind::kLaunchFailed, "launch_failed"},
}};

// SystemTime counts nanoseconds in an int64, which ends in April 2262, and ParseRfc3339's
// conversion overflows (undefined behaviour) past that. Times are accepted only from 1970
// through 2261, checked on the text before ParseRfc3339 sees it, so that every accepted time
// also survives FormatRfc3339 -> ParseRfc3339 unchanged.
constexpr int kEarliestYear = 1970;
constexpr int kLatestYear = 2261;
const SystemTime kLatestTime =
    std::chrono::sys_days{std::chrono::year{kLatestYear} / std::chrono::December / 31} +
    std::chrono::hours(23) + std::chrono::minutes(59) + std::chrono::seconds(59);

// Renders an untrusted string for a message: printable ASCII only, at most 64 bytes.
std::string Quote(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\\' || c == '\'') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

std::unexpected<Error> Invalid(std::string_view path, std::string_view why) {
  return Fail(ErrorCode::kInvalidArgument, "{}: {}", path, why);
}

// A JSON object whose keys must all be known. Not ObjectReader or DocumentReader: event
// messages have their own wording ("must be an object, not array", "missing field 'kind'"),
// and unknown keys are quoted with this file's Quote.
class StrictObject {
 public:
  static Result<StrictObject> Create(const Json& j, std::string_view path,
                                     std::initializer_list<std::string_view> known) {
    if (!j.is_object()) {
      return Invalid(path, fmt::format("must be an object, not {}", JsonTypeName(j)));
    }
    for (const auto& item : j.items()) {
      if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
        return Invalid(path, fmt::format("unknown field '{}'", Quote(item.key())));
      }
    }
    return StrictObject(j, path);
  }

  // nullptr if absent.
  const Json* Find(std::string_view key) const { return FindMember(json_, key); }
  Result<const Json*> Required(std::string_view key) const {
    const Json* v = Find(key);
    if (v == nullptr) return Invalid(path_, fmt::format("missing field '{}'", key));
    return v;
  }
  std::string PathOf(std::string_view key) const { return JsonPathJoin(path_, key); }

 private:
  StrictObject(const Json& j, std::string_view path) : json_(j), path_(path) {}
  const Json& json_;
  std::string path_;
};

Result<std::string> ReadString(const Json& v, std::string_view path) {
  if (!v.is_string())
    return Invalid(path, fmt::format("must be a string, not {}", JsonTypeName(v)));
  return v.get<std::string>();
}

Result<int64_t> ReadInt(const Json& v, std::string_view path, int64_t min, int64_t max) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(max) || (min > 0 && u < static_cast<uint64_t>(min))) {
      return Invalid(path, fmt::format("{} is out of range ({}..{})", u, min, max));
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < min || i > max) {
      return Invalid(path, fmt::format("{} is out of range ({}..{})", i, min, max));
    }
    return i;
  }
  return Invalid(path, fmt::format("must be an integer, not {}", JsonTypeName(v)));
}

// "0x" followed by 1..16 hex digits (either case).
Result<uint64_t> ReadAddress(const Json& v, std::string_view path) {
  MOAT_ASSIGN_OR_RETURN(std::string s, ReadString(v, path));
  auto bad = [&] {
    return Invalid(path, fmt::format("'{}' is not a 64-bit address like \"0x7f001234\"", Quote(s)));
  };
  if (s.size() < 3 || s.size() > 18 || s[0] != '0' || s[1] != 'x') return bad();
  uint64_t value = 0;
  for (size_t i = 2; i < s.size(); ++i) {
    char c = s[i];
    uint64_t digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<uint64_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      digit = static_cast<uint64_t>(c - 'A' + 10);
    } else {
      return bad();
    }
    value = (value << 4) | digit;
  }
  return value;
}

std::string FormatAddress(uint64_t v) { return fmt::format("0x{:x}", v); }

Result<Guid> ReadGuid(const Json& v, std::string_view path) {
  MOAT_ASSIGN_OR_RETURN(std::string s, ReadString(v, path));
  auto g = Guid::Parse(s);
  if (!g) return Fail(g.error().WithContext(path));
  return *g;
}

Result<SystemTime> ReadTime(const Json& v, std::string_view path) {
  MOAT_ASSIGN_OR_RETURN(std::string s, ReadString(v, path));
  auto out_of_range = [&] {
    return Invalid(path,
                   fmt::format("'{}' is outside {}..{}", Quote(s), kEarliestYear, kLatestYear));
  };
  // SECURITY: refuse far-away years before ParseRfc3339 can overflow on them.
  if (s.size() >= 4 &&
      std::all_of(s.begin(), s.begin() + 4, [](char c) { return c >= '0' && c <= '9'; })) {
    int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    if (year < kEarliestYear || year > kLatestYear) return out_of_range();
  }
  auto t = ParseRfc3339(s);
  if (!t) return Fail(t.error().WithContext(path));
  if (*t > kLatestTime) return out_of_range();  // 2261-12-31T23:59:60Z
  return *t;
}

Result<StackFrame> ReadFrame(const Json& j, std::string_view path) {
  MOAT_ASSIGN_OR_RETURN(
      StrictObject obj,
      StrictObject::Create(j, path, {"pc", "module", "build_id", "offset", "symbol"}));
  StackFrame f;
  MOAT_ASSIGN_OR_RETURN(const Json* pc, obj.Required("pc"));
  MOAT_ASSIGN_OR_RETURN(f.pc, ReadAddress(*pc, obj.PathOf("pc")));
  MOAT_ASSIGN_OR_RETURN(const Json* module, obj.Required("module"));
  MOAT_ASSIGN_OR_RETURN(f.module, ReadString(*module, obj.PathOf("module")));
  if (f.module.empty() || f.module.size() > kMaxModuleBytes) {
    return Invalid(obj.PathOf("module"),
                   fmt::format("must be 1 to {} bytes, not {}", kMaxModuleBytes, f.module.size()));
  }
  if (f.module.find('/') != std::string::npos || f.module == "." || f.module == ".." ||
      HasControlCharacter(f.module)) {
    return Invalid(
        obj.PathOf("module"),
        fmt::format("'{}' is not a file name (no '/' or control characters)", Quote(f.module)));
  }
  if (const Json* build_id = obj.Find("build_id")) {
    MOAT_ASSIGN_OR_RETURN(f.build_id, ReadString(*build_id, obj.PathOf("build_id")));
    bool hex = std::all_of(f.build_id.begin(), f.build_id.end(),
                           [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
    if (!hex || f.build_id.size() % 2 != 0 || f.build_id.size() > kMaxBuildIdDigits) {
      return Invalid(obj.PathOf("build_id"),
                     fmt::format("'{}' is not lowercase hexadecimal of even length, at most {} "
                                 "digits",
                                 Quote(f.build_id), kMaxBuildIdDigits));
    }
  }
  MOAT_ASSIGN_OR_RETURN(const Json* offset, obj.Required("offset"));
  MOAT_ASSIGN_OR_RETURN(f.offset, ReadAddress(*offset, obj.PathOf("offset")));
  if (const Json* symbol = obj.Find("symbol")) {
    MOAT_ASSIGN_OR_RETURN(f.symbol, ReadString(*symbol, obj.PathOf("symbol")));
    if (f.symbol.size() > kMaxSymbolBytes) {
      return Invalid(obj.PathOf("symbol"), fmt::format("{} bytes exceeds the limit of {}",
                                                       f.symbol.size(), kMaxSymbolBytes));
    }
    if (HasControlCharacter(f.symbol)) {
      return Invalid(obj.PathOf("symbol"), "contains a control character");
    }
  }
  return f;
}

template <typename E, size_t N>
Result<E> ReadEnum(const Json& v, std::string_view path,
                   const std::array<std::pair<E, std::string_view>, N>& names) {
  MOAT_ASSIGN_OR_RETURN(std::string s, ReadString(v, path));
  std::string expected;
  for (const auto& [value, name] : names) {
    if (s == name) return value;
    expected += expected.empty() ? "" : ", ";
    expected += name;
  }
  return Invalid(path, fmt::format("'{}' is not one of {}", Quote(s), expected));
}

constexpr std::array<std::pair<EventType, std::string_view>, 2> kTypeNames = {{
    {EventType::kUnplanned, "unplanned"},
    {EventType::kPlanned, "planned"},
}};
constexpr std::array<std::pair<EventClass, std::string_view>, 2> kClassNames = {{
    {EventClass::kApplication, "app"},
    {EventClass::kOs, "os"},
}};

}  // namespace

std::string_view FailureKindName(FailureKind kind) {
  for (const auto& [value, name] : kKindNames) {
    if (value == kind) return name;
  }
  return "unknown";
}

std::string_view EventTypeName(EventType type) {
  return type == EventType::kPlanned ? "planned" : "unplanned";
}

std::string_view EventClassName(EventClass event_class) {
  return event_class == EventClass::kOs ? "os" : "app";
}

Json ToJson(const FailureEvent& e) {
  Json j = Json::object();
  j["event_id"] = e.event_id;
  j["kind"] = std::string(FailureKindName(e.kind));
  j["type"] = std::string(EventTypeName(e.type));
  j["class"] = std::string(EventClassName(e.event_class));
  j["component_id"] = e.component_id.ToString();
  j["image_id"] = e.image_id.ToString();
  j["signal"] = e.signal;
  j["exit_status"] = e.exit_status;
  j["errno"] = e.error_number;
  j["code"] = e.code;
  if (e.pc) j["pc"] = FormatAddress(*e.pc);
  if (e.lr) j["lr"] = FormatAddress(*e.lr);
  if (e.sp) j["sp"] = FormatAddress(*e.sp);
  if (e.fault_address) j["fault_address"] = FormatAddress(*e.fault_address);
  Json stack = Json::array();
  for (const StackFrame& f : e.stack) {
    Json frame = Json::object();
    frame["pc"] = FormatAddress(f.pc);
    frame["module"] = f.module;
    if (!f.build_id.empty()) frame["build_id"] = f.build_id;
    frame["offset"] = FormatAddress(f.offset);
    if (!f.symbol.empty()) frame["symbol"] = f.symbol;
    stack.push_back(std::move(frame));
  }
  j["stack"] = std::move(stack);
  j["first_time"] = FormatRfc3339(e.first_time);
  j["last_time"] = FormatRfc3339(e.last_time);
  j["count"] = e.count;
  return j;
}

Result<FailureEvent> FailureEventFromJson(const Json& j, std::string_view path) {
  MOAT_ASSIGN_OR_RETURN(
      StrictObject obj,
      StrictObject::Create(j, path,
                           {"event_id", "kind", "type", "class", "component_id", "image_id",
                            "signal", "exit_status", "errno", "code", "pc", "lr", "sp",
                            "fault_address", "stack", "first_time", "last_time", "count"}));
  FailureEvent e;

  MOAT_ASSIGN_OR_RETURN(const Json* event_id, obj.Required("event_id"));
  MOAT_ASSIGN_OR_RETURN(Guid id, ReadGuid(*event_id, obj.PathOf("event_id")));
  if (id.IsNil()) return Invalid(obj.PathOf("event_id"), "must not be the nil UUID");
  e.event_id = id.ToString();

  MOAT_ASSIGN_OR_RETURN(const Json* kind, obj.Required("kind"));
  MOAT_ASSIGN_OR_RETURN(e.kind, ReadEnum(*kind, obj.PathOf("kind"), kKindNames));
  MOAT_ASSIGN_OR_RETURN(const Json* type, obj.Required("type"));
  MOAT_ASSIGN_OR_RETURN(e.type, ReadEnum(*type, obj.PathOf("type"), kTypeNames));
  MOAT_ASSIGN_OR_RETURN(const Json* event_class, obj.Required("class"));
  MOAT_ASSIGN_OR_RETURN(e.event_class, ReadEnum(*event_class, obj.PathOf("class"), kClassNames));
  MOAT_ASSIGN_OR_RETURN(const Json* component_id, obj.Required("component_id"));
  MOAT_ASSIGN_OR_RETURN(e.component_id, ReadGuid(*component_id, obj.PathOf("component_id")));
  MOAT_ASSIGN_OR_RETURN(const Json* image_id, obj.Required("image_id"));
  MOAT_ASSIGN_OR_RETURN(e.image_id, ReadGuid(*image_id, obj.PathOf("image_id")));

  struct IntField {
    std::string_view key;
    int* out;
    int64_t min, max;
  };
  for (const IntField& f : {IntField{"signal", &e.signal, 0, kMaxSignal},
                            IntField{"exit_status", &e.exit_status, 0, kMaxExitStatus},
                            IntField{"errno", &e.error_number, 0, kMaxErrno},
                            IntField{"code", &e.code, std::numeric_limits<int32_t>::min(),
                                     std::numeric_limits<int32_t>::max()}}) {
    if (const Json* v = obj.Find(f.key)) {
      MOAT_ASSIGN_OR_RETURN(int64_t value, ReadInt(*v, obj.PathOf(f.key), f.min, f.max));
      *f.out = static_cast<int>(value);
    }
  }
  for (auto [key, out] : {std::pair{"pc", &e.pc}, std::pair{"lr", &e.lr}, std::pair{"sp", &e.sp},
                          std::pair{"fault_address", &e.fault_address}}) {
    if (const Json* v = obj.Find(key)) {
      MOAT_ASSIGN_OR_RETURN(*out, ReadAddress(*v, obj.PathOf(key)));
    }
  }
  if (const Json* stack = obj.Find("stack")) {
    std::string stack_path = obj.PathOf("stack");
    if (!stack->is_array()) {
      return Invalid(stack_path, fmt::format("must be an array, not {}", JsonTypeName(*stack)));
    }
    if (stack->size() > kMaxStackFrames) {
      return Fail(ErrorCode::kLimitExceeded, "{}: {} frames exceed the limit of {}", stack_path,
                  stack->size(), kMaxStackFrames);
    }
    e.stack.reserve(stack->size());
    for (size_t i = 0; i < stack->size(); ++i) {
      MOAT_ASSIGN_OR_RETURN(StackFrame frame, ReadFrame((*stack)[i], JsonPathIndex(stack_path, i)));
      e.stack.push_back(std::move(frame));
    }
  }
  MOAT_ASSIGN_OR_RETURN(const Json* first_time, obj.Required("first_time"));
  MOAT_ASSIGN_OR_RETURN(e.first_time, ReadTime(*first_time, obj.PathOf("first_time")));
  MOAT_ASSIGN_OR_RETURN(const Json* last_time, obj.Required("last_time"));
  MOAT_ASSIGN_OR_RETURN(e.last_time, ReadTime(*last_time, obj.PathOf("last_time")));
  if (e.last_time < e.first_time) return Invalid(obj.PathOf("last_time"), "is before first_time");
  MOAT_ASSIGN_OR_RETURN(const Json* count, obj.Required("count"));
  MOAT_ASSIGN_OR_RETURN(int64_t count_value, ReadInt(*count, obj.PathOf("count"), 1,
                                                     std::numeric_limits<uint32_t>::max()));
  e.count = static_cast<uint32_t>(count_value);

  // Rules that tie fields to the kind.
  std::string_view kind_name = FailureKindName(e.kind);
  if (e.kind != FailureKind::kEventsDropped && e.component_id.IsNil()) {
    return Invalid(obj.PathOf("component_id"),
                   fmt::format("must not be the nil GUID for an {} event", kind_name));
  }
  if (e.kind == FailureKind::kAppCrash && e.signal == 0) {
    return Invalid(obj.PathOf("signal"), "an app_crash event needs a signal (1..64)");
  }
  if (e.kind == FailureKind::kAppExit && e.exit_status == 0) {
    return Invalid(obj.PathOf("exit_status"), "an app_exit event needs a non-zero exit status");
  }
  return e;
}

Result<FailureEvent> ParseFailureEvent(std::string_view json) {
  MOAT_ASSIGN_OR_RETURN(
      Json j,
      ParseJson(json, "event", JsonLimits{.max_bytes = kMaxEventJsonBytes, .max_depth = 8}));
  return FailureEventFromJson(j, "event");
}

Result<std::vector<FailureEvent>> ParseFailureEventBatch(std::string_view json, size_t max_events) {
  max_events = std::min(max_events, kMaxEventBatchEvents);
  MOAT_ASSIGN_OR_RETURN(
      Json j, ParseJson(json, "event batch",
                        JsonLimits{.max_bytes = kMaxEventBatchJsonBytes, .max_depth = 8}));
  MOAT_ASSIGN_OR_RETURN(StrictObject obj, StrictObject::Create(j, "event batch", {"events"}));
  MOAT_ASSIGN_OR_RETURN(const Json* events, obj.Required("events"));
  if (!events->is_array()) {
    return Invalid("events", fmt::format("must be an array, not {}", JsonTypeName(*events)));
  }
  if (events->size() > max_events) {
    return Fail(ErrorCode::kLimitExceeded, "events: {} events exceed the limit of {}",
                events->size(), max_events);
  }
  std::vector<FailureEvent> out;
  out.reserve(events->size());
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < events->size(); ++i) {
    std::string path = JsonPathIndex("events", i);
    MOAT_ASSIGN_OR_RETURN(FailureEvent e, FailureEventFromJson((*events)[i], path));
    auto [it, inserted] = seen.emplace(e.event_id, i);
    if (!inserted) {
      return Invalid(JsonPathJoin(path, "event_id"),
                     fmt::format("duplicates events[{}].event_id", it->second));
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::string SerializeFailureEventBatch(std::span<const FailureEvent> events) {
  Json list = Json::array();
  for (const FailureEvent& e : events) list.push_back(ToJson(e));
  Json batch = Json::object();
  batch["events"] = std::move(list);
  return DumpJson(batch);
}

std::string AzureSphereDescription(const FailureEvent& e) {
  auto hex = [](uint64_t v) { return fmt::format("{:08X}", v); };
  std::string component = e.component_id.ToString();
  std::string image = e.image_id.ToString();
  auto crash_without_registers = [&](int signal) {
    // Azure Sphere's form for a process killed by a signal: its wait status equals the signal
    // number (no core dumps on the device).
    return fmt::format(
        "AppCrash (exit_status={}; signal_status={}; signal_code={}; component_id={}; "
        "image_id={})",
        signal, signal, e.code, component, image);
  };
  switch (e.kind) {
    case FailureKind::kAppCrash:
      if (e.pc && e.lr && e.sp) {
        return fmt::format(
            "AppCrash (pc={}; lr={}; sp={}; signo={}; errno={}; code={}; component_id={})",
            hex(*e.pc), hex(*e.lr), hex(*e.sp), e.signal, e.error_number, e.code, component);
      }
      return crash_without_registers(e.signal);
    case FailureKind::kAppMemoryLimit:
      // Azure Sphere kills an app over its memory limit with SIGKILL and reports a crash.
      return crash_without_registers(e.signal != 0 ? e.signal : kSigKill);
    case FailureKind::kAppExit:
      return fmt::format("AppExit (exit_code={}; component_id={}; image_id={})", e.exit_status,
                         component, image);
    case FailureKind::kEventsDropped:
      return fmt::format("EventsDropped (count={})", e.count);
    case FailureKind::kLaunchFailed:
      return fmt::format("AppLaunchFailed (errno={}; component_id={}; image_id={})", e.error_number,
                         component, image);
  }
  return "Unknown";
}

std::string StackSignature(const FailureEvent& e) {
  crypto::Hasher h = crypto::Hasher::Create(crypto::DigestAlgorithm::kSha256);
  auto put_u32 = [&](uint32_t v) {
    std::array<uint8_t, 4> b = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                                static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
    h.Update(b);
  };
  auto put_u64 = [&](uint64_t v) {
    put_u32(static_cast<uint32_t>(v >> 32));
    put_u32(static_cast<uint32_t>(v));
  };
  // Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently.
  auto put_string = [&](std::string_view s) {
    put_u32(static_cast<uint32_t>(s.size()));
    h.Update(s);
  };
  h.Update(std::string_view("moat stack signature v1\0", 24));
  put_string(FailureKindName(e.kind));
  h.Update(e.component_id.bytes());
  put_u32(static_cast<uint32_t>(e.signal));
  size_t frames = std::min(e.stack.size(), kSignatureFrames);
  put_u32(static_cast<uint32_t>(frames));
  for (size_t i = 0; i < frames; ++i) {
    put_string(e.stack[i].module);
    put_string(e.stack[i].build_id);
    put_u64(e.stack[i].offset);
  }
  return HexEncode(h.Finish());
}

}  // namespace moat::formats
