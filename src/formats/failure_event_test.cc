#include "formats/failure_event.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace moat::formats {
namespace {

using namespace std::chrono_literals;

constexpr char kComponentId[] = "a60a27ff-8936-4a49-b73f-70861db03d43";
constexpr char kImageId[] = "db81a79a-7ec4-435d-9cac-b2bfe2f2e38b";

FailureEvent SampleCrash() {
  FailureEvent e;
  e.event_id = "3f2b8c1e-6d4a-4e8b-9c0d-1a2b3c4d5e6f";
  e.kind = FailureKind::kAppCrash;
  e.type = EventType::kUnplanned;
  e.event_class = EventClass::kApplication;
  e.component_id = *Guid::Parse(kComponentId);
  e.image_id = *Guid::Parse(kImageId);
  e.signal = 11;
  e.error_number = 0;
  e.code = 1;  // SEGV_MAPERR
  e.pc = 0x213ECC62;
  e.lr = 0x2136E6F7;
  e.sp = 0xBE96DC28;
  e.fault_address = 0;
  e.stack = {
      {.pc = 0x213ECC62,
       .module = "app",
       .build_id = "a1b2c3d4",
       .offset = 0x1c62,
       .symbol = "blink_led"},
      {.pc = 0x2136E6F7, .module = "libc.so.6", .build_id = "", .offset = 0x4e6f7},
      {.pc = 0xffffffffffffffff,
       .module = "app",
       .build_id = "a1b2c3d4",
       .offset = 0x10,
       .symbol = "main"},
  };
  e.first_time = *ParseRfc3339("2026-11-27T19:46:27Z");
  e.last_time = *ParseRfc3339("2026-11-27T20:00:00Z");
  e.count = 3;
  return e;
}

std::string ParseError(std::string_view json) {
  auto r = ParseFailureEvent(json);
  return r ? std::string("(no error)") : r.error().message();
}

// Applies `edit` to the JSON of SampleCrash() and returns the parse error.
std::string ErrorAfter(std::function<void(Json&)> edit) {
  Json j = ToJson(SampleCrash());
  edit(j);
  return ParseError(DumpJson(j));
}

TEST(FailureEventTest, JsonRoundTrip) {
  FailureEvent e = SampleCrash();
  auto parsed = ParseFailureEvent(DumpJson(ToJson(e)));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, e);

  // Every kind, with and without optional fields.
  for (FailureKind kind :
       {FailureKind::kAppCrash, FailureKind::kAppExit, FailureKind::kAppMemoryLimit,
        FailureKind::kEventsDropped, FailureKind::kLaunchFailed}) {
    FailureEvent minimal;
    minimal.event_id = "00000000-0000-4000-8000-000000000001";
    minimal.kind = kind;
    minimal.type = EventType::kPlanned;
    minimal.event_class = EventClass::kOs;
    if (kind != FailureKind::kEventsDropped) minimal.component_id = *Guid::Parse(kComponentId);
    minimal.signal = kind == FailureKind::kAppCrash ? 6 : 0;
    minimal.exit_status = kind == FailureKind::kAppExit ? 1 : 0;
    minimal.first_time = minimal.last_time = *ParseRfc3339("1970-01-01T00:00:00Z");
    auto back = ParseFailureEvent(DumpJson(ToJson(minimal)));
    ASSERT_TRUE(back) << FailureKindName(kind) << ": " << back.error().message();
    EXPECT_EQ(*back, minimal);
  }
}

TEST(FailureEventTest, JsonShape) {
  FailureEvent e = SampleCrash();
  e.stack.resize(1);
  e.fault_address.reset();
  EXPECT_EQ(DumpJson(ToJson(e)),
            R"({"class":"app","code":1,"component_id":"a60a27ff-8936-4a49-b73f-70861db03d43",)"
            R"("count":3,"errno":0,"event_id":"3f2b8c1e-6d4a-4e8b-9c0d-1a2b3c4d5e6f",)"
            R"("exit_status":0,"first_time":"2026-11-27T19:46:27Z",)"
            R"("image_id":"db81a79a-7ec4-435d-9cac-b2bfe2f2e38b","kind":"app_crash",)"
            R"("last_time":"2026-11-27T20:00:00Z","lr":"0x2136e6f7","pc":"0x213ecc62",)"
            R"("signal":11,"sp":"0xbe96dc28","stack":[{"build_id":"a1b2c3d4","module":"app",)"
            R"("offset":"0x1c62","pc":"0x213ecc62","symbol":"blink_led"}],"type":"unplanned"})");
}

TEST(FailureEventTest, ParsingNormalizesCaseAndAcceptsOmittedOptionals) {
  auto e = ParseFailureEvent(
      R"({"event_id":"3F2B8C1E-6D4A-4E8B-9C0D-1A2B3C4D5E6F","kind":"app_exit","type":"unplanned",)"
      R"("class":"app","component_id":"A60A27FF-8936-4A49-B73F-70861DB03D43",)"
      R"("image_id":"db81a79a-7ec4-435d-9cac-b2bfe2f2e38b","exit_status":3,)"
      R"("pc":"0x00000000DEADBEEF","first_time":"2026-11-27T19:46:27.123Z",)"
      R"("last_time":"2026-11-27T19:46:27Z","count":1})");
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->event_id, "3f2b8c1e-6d4a-4e8b-9c0d-1a2b3c4d5e6f");
  EXPECT_EQ(e->component_id.ToString(), kComponentId);
  EXPECT_EQ(e->pc, 0xdeadbeefu);
  EXPECT_FALSE(e->lr);
  EXPECT_TRUE(e->stack.empty());
  EXPECT_EQ(e->signal, 0);
  EXPECT_EQ(e->first_time, e->last_time);  // fractional seconds are dropped
}

TEST(FailureEventTest, AzureSphereDescriptions) {
  FailureEvent crash = SampleCrash();
  crash.code = 0;
  // The register form, exactly as in Azure Sphere's documentation.
  EXPECT_EQ(AzureSphereDescription(crash),
            "AppCrash (pc=213ECC62; lr=2136E6F7; sp=BE96DC28; signo=11; errno=0; code=0; "
            "component_id=a60a27ff-8936-4a49-b73f-70861db03d43)");
  // Small values are zero-padded to 8 digits; 64-bit ones are not cut.
  crash.pc = 0xa4c8;
  crash.lr = 0x7f0012345678;
  crash.sp = 0x15ffa0;
  crash.error_number = 14;
  crash.code = -6;
  EXPECT_EQ(AzureSphereDescription(crash),
            "AppCrash (pc=0000A4C8; lr=7F0012345678; sp=0015FFA0; signo=11; errno=14; code=-6; "
            "component_id=a60a27ff-8936-4a49-b73f-70861db03d43)");

  // Without registers: Azure Sphere's status form.
  FailureEvent no_regs = SampleCrash();
  no_regs.pc.reset();
  no_regs.code = 3;
  EXPECT_EQ(AzureSphereDescription(no_regs),
            "AppCrash (exit_status=11; signal_status=11; signal_code=3; "
            "component_id=a60a27ff-8936-4a49-b73f-70861db03d43; "
            "image_id=db81a79a-7ec4-435d-9cac-b2bfe2f2e38b)");

  FailureEvent exit = SampleCrash();
  exit.kind = FailureKind::kAppExit;
  exit.exit_status = 1;
  exit.component_id = *Guid::Parse("a7d43534-9f43-4e89-8e5f-44c985abe034");
  EXPECT_EQ(AzureSphereDescription(exit),
            "AppExit (exit_code=1; component_id=a7d43534-9f43-4e89-8e5f-44c985abe034; "
            "image_id=db81a79a-7ec4-435d-9cac-b2bfe2f2e38b)");

  FailureEvent oom = SampleCrash();
  oom.kind = FailureKind::kAppMemoryLimit;
  oom.signal = 0;
  oom.code = 0;
  EXPECT_EQ(AzureSphereDescription(oom),
            "AppCrash (exit_status=9; signal_status=9; signal_code=0; "
            "component_id=a60a27ff-8936-4a49-b73f-70861db03d43; "
            "image_id=db81a79a-7ec4-435d-9cac-b2bfe2f2e38b)");

  FailureEvent dropped = SampleCrash();
  dropped.kind = FailureKind::kEventsDropped;
  dropped.count = 42;
  EXPECT_EQ(AzureSphereDescription(dropped), "EventsDropped (count=42)");

  FailureEvent launch = SampleCrash();
  launch.kind = FailureKind::kLaunchFailed;
  launch.error_number = 2;
  EXPECT_EQ(AzureSphereDescription(launch),
            "AppLaunchFailed (errno=2; component_id=a60a27ff-8936-4a49-b73f-70861db03d43; "
            "image_id=db81a79a-7ec4-435d-9cac-b2bfe2f2e38b)");
}

TEST(FailureEventTest, StackSignatureIgnoresPcsTimesAndCounts) {
  FailureEvent a = SampleCrash();
  FailureEvent b = SampleCrash();
  b.event_id = "11111111-2222-4333-8444-555555555555";
  for (StackFrame& f : b.stack) f.pc += 0x10000000;  // another ASLR layout
  b.pc = 0x1;
  b.lr.reset();
  b.first_time += 24h;
  b.last_time += 48h;
  b.count = 99;
  b.image_id = Guid();
  b.stack[0].symbol = "renamed";  // symbols are not part of the key either
  std::string sig = StackSignature(a);
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_EQ(sig.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(StackSignature(b), sig);

  // Frames beyond the top eight do not matter.
  FailureEvent deep = SampleCrash();
  deep.stack.resize(12, deep.stack[1]);
  FailureEvent deep2 = deep;
  deep2.stack[10].offset = 0x999;
  EXPECT_EQ(StackSignature(deep), StackSignature(deep2));
  deep2.stack[7].offset = 0x999;
  EXPECT_NE(StackSignature(deep), StackSignature(deep2));

  auto differs = [&](std::function<void(FailureEvent&)> edit) {
    FailureEvent c = SampleCrash();
    edit(c);
    return StackSignature(c) != sig;
  };
  EXPECT_TRUE(differs([](auto& e) { e.stack[0].offset += 4; }));
  EXPECT_TRUE(differs([](auto& e) { e.stack[0].module = "other"; }));
  EXPECT_TRUE(differs([](auto& e) { e.stack[0].build_id = "ffff"; }));
  EXPECT_TRUE(differs([](auto& e) { e.stack.pop_back(); }));
  EXPECT_TRUE(differs([](auto& e) { e.signal = 6; }));
  EXPECT_TRUE(differs([](auto& e) { e.kind = FailureKind::kAppMemoryLimit; }));
  EXPECT_TRUE(differs([](auto& e) { e.component_id = Guid(); }));
  // Field boundaries are unambiguous.
  EXPECT_TRUE(differs([](auto& e) {
    e.stack[0].module = "appa1";
    e.stack[0].build_id = "b2c3d4";
  }));
}

TEST(FailureEventTest, MalformedEventsNameTheField) {
  EXPECT_EQ(ErrorAfter([](Json& j) { j["foo"] = 1; }), "event: unknown field 'foo'");
  EXPECT_EQ(ErrorAfter([](Json& j) { j.erase("kind"); }), "event: missing field 'kind'");
  EXPECT_EQ(ErrorAfter([](Json& j) { j.erase("count"); }), "event: missing field 'count'");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["kind"] = 3; }),
            "event.kind: must be a string, not integer");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["kind"] = "crash"; }),
            "event.kind: 'crash' is not one of app_crash, app_exit, app_memory_limit, "
            "events_dropped, launch_failed");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["type"] = "sometimes"; }),
            "event.type: 'sometimes' is not one of unplanned, planned");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["class"] = "kernel"; }),
            "event.class: 'kernel' is not one of app, os");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["event_id"] = "not-a-uuid"; }),
            "event.event_id: 'not-a-uuid' is not a GUID (expected 36 characters like "
            "01234567-89ab-cdef-0123-456789abcdef)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["event_id"] = "00000000-0000-0000-0000-000000000000"; }),
            "event.event_id: must not be the nil UUID");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["component_id"] = "00000000-0000-0000-0000-000000000000"; }),
            "event.component_id: must not be the nil GUID for an app_crash event");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["image_id"] = 7; }),
            "event.image_id: must be a string, not integer");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["count"] = 0; }),
            "event.count: 0 is out of range (1..4294967295)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["count"] = -1; }),
            "event.count: -1 is out of range (1..4294967295)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["count"] = 4294967296; }),
            "event.count: 4294967296 is out of range (1..4294967295)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["count"] = 1.5; }),
            "event.count: must be an integer, not number");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["count"] = "3"; }),
            "event.count: must be an integer, not string");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["signal"] = 65; }),
            "event.signal: 65 is out of range (0..64)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["signal"] = 0; }),
            "event.signal: an app_crash event needs a signal (1..64)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j.erase("signal"); }),
            "event.signal: an app_crash event needs a signal (1..64)");
  EXPECT_EQ(ErrorAfter([](Json& j) {
              j["kind"] = "app_exit";
              j["exit_status"] = 0;
            }),
            "event.exit_status: an app_exit event needs a non-zero exit status");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["exit_status"] = 256; }),
            "event.exit_status: 256 is out of range (0..255)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["errno"] = 5000; }),
            "event.errno: 5000 is out of range (0..4095)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["code"] = 2147483648; }),
            "event.code: 2147483648 is out of range (-2147483648..2147483647)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["pc"] = 1234; }), "event.pc: must be a string, not integer");
  for (const char* bad : {"0x", "1234", "0X12", "0x12345678123456789", "0xg", "-0x1", " 0x1"}) {
    EXPECT_EQ(ErrorAfter([&](Json& j) { j["sp"] = bad; }),
              fmt::format("event.sp: '{}' is not a 64-bit address like \"0x7f001234\"", bad));
  }
  EXPECT_EQ(ErrorAfter([](Json& j) { j["first_time"] = "yesterday"; }),
            "event.first_time: time 'yesterday' is not RFC 3339 UTC (expected "
            "YYYY-MM-DDTHH:MM:SSZ)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["first_time"] = "1969-12-31T23:59:59Z"; }),
            "event.first_time: '1969-12-31T23:59:59Z' is outside 1970..2261");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["last_time"] = "9999-12-31T23:59:59Z"; }),
            "event.last_time: '9999-12-31T23:59:59Z' is outside 1970..2261");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["last_time"] = "2261-12-31T23:59:60Z"; }),
            "event.last_time: '2261-12-31T23:59:60Z' is outside 1970..2261");
  EXPECT_TRUE(ParseError(DumpJson([] {
                Json j = ToJson(SampleCrash());
                j["last_time"] = "2261-12-31T23:59:59Z";
                return j;
              }())) == "(no error)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["last_time"] = "2026-11-27T19:46:26Z"; }),
            "event.last_time: is before first_time");
}

TEST(FailureEventTest, MalformedStacksNameTheFrame) {
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"] = Json::object(); }),
            "event.stack: must be an array, not object");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][1] = 5; }),
            "event.stack[1]: must be an object, not integer");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][0].erase("pc"); }),
            "event.stack[0]: missing field 'pc'");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][0]["line"] = 3; }),
            "event.stack[0]: unknown field 'line'");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][2]["offset"] = "12"; }),
            "event.stack[2].offset: '12' is not a 64-bit address like \"0x7f001234\"");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][0]["build_id"] = "ABCD"; }),
            "event.stack[0].build_id: 'ABCD' is not lowercase hexadecimal of even length, at "
            "most 128 digits");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][0]["build_id"] = "abc"; }),
            "event.stack[0].build_id: 'abc' is not lowercase hexadecimal of even length, at "
            "most 128 digits");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][0]["build_id"] = std::string(130, 'a'); }),
            "event.stack[0].build_id: '" + std::string(64, 'a') +
                "...' is not lowercase hexadecimal of even length, at most 128 digits");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][1]["module"] = "/usr/lib/libc.so.6"; }),
            "event.stack[1].module: '/usr/lib/libc.so.6' is not a file name (no '/' or control "
            "characters)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][1]["module"] = ""; }),
            "event.stack[1].module: must be 1 to 255 bytes, not 0");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][1]["module"] = "a\x01"; }),
            "event.stack[1].module: 'a\\x01' is not a file name (no '/' or control characters)");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][0]["symbol"] = std::string(513, 's'); }),
            "event.stack[0].symbol: 513 bytes exceeds the limit of 512");
  EXPECT_EQ(ErrorAfter([](Json& j) { j["stack"][0]["symbol"] = "a\nb"; }),
            "event.stack[0].symbol: contains a control character");

  Json j = ToJson(SampleCrash());
  j["stack"] = Json::array();
  for (int i = 0; i < 65; ++i) j["stack"].push_back(ToJson(SampleCrash())["stack"][0]);
  auto r = ParseFailureEvent(DumpJson(j));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(r.error().message(), "event.stack: 65 frames exceed the limit of 64");
  j["stack"].erase(0);
  EXPECT_TRUE(ParseFailureEvent(DumpJson(j)));
}

TEST(FailureEventTest, MalformedDocuments) {
  EXPECT_EQ(ParseError("[]"), "event: must be an object, not array");
  EXPECT_TRUE(ParseError("{").starts_with("event: invalid JSON: "));
  EXPECT_EQ(ParseError(R"({"kind":"app_crash","kind":"app_exit"})"),
            "event: invalid JSON: duplicate key 'kind'");
  auto big = ParseFailureEvent(std::string(kMaxEventJsonBytes + 1, ' '));
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(big.error().message(), "event: 131073 bytes exceeds the limit of 131072 bytes");
  auto j = FailureEventFromJson(Json("string"), "events[4]");
  ASSERT_FALSE(j);
  EXPECT_EQ(j.error().message(), "events[4]: must be an object, not string");
}

std::vector<FailureEvent> SampleBatch(size_t n) {
  std::vector<FailureEvent> events;
  for (size_t i = 0; i < n; ++i) {
    FailureEvent e = SampleCrash();
    e.stack.clear();
    e.event_id = fmt::format("00000000-0000-4000-8000-{:012x}", i + 1);
    events.push_back(e);
  }
  return events;
}

TEST(FailureEventTest, BatchRoundTrip) {
  auto events = SampleBatch(3);
  events[1].kind = FailureKind::kEventsDropped;
  events[1].count = 17;
  auto parsed = ParseFailureEventBatch(SerializeFailureEventBatch(events));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, events);
  auto empty = ParseFailureEventBatch(SerializeFailureEventBatch({}));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(SerializeFailureEventBatch({}), R"({"events":[]})");
}

TEST(FailureEventTest, BatchLimits) {
  auto thousand = SampleBatch(1000);
  std::string text = SerializeFailureEventBatch(thousand);
  ASSERT_LE(text.size(), kMaxEventBatchJsonBytes);
  auto ok = ParseFailureEventBatch(text);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->size(), 1000u);

  auto too_many = ParseFailureEventBatch(SerializeFailureEventBatch(SampleBatch(1001)));
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(too_many.error().message(), "events: 1001 events exceed the limit of 1000");
  auto small_limit = ParseFailureEventBatch(SerializeFailureEventBatch(SampleBatch(3)), 2);
  ASSERT_FALSE(small_limit);
  EXPECT_EQ(small_limit.error().message(), "events: 3 events exceed the limit of 2");
  // A caller cannot raise the cap above 1000.
  EXPECT_FALSE(ParseFailureEventBatch(SerializeFailureEventBatch(SampleBatch(1001)), 5000));

  auto huge = ParseFailureEventBatch(std::string(kMaxEventBatchJsonBytes + 1, ' '));
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(huge.error().message(),
            "event batch: 1048577 bytes exceeds the limit of 1048576 bytes");
}

TEST(FailureEventTest, MalformedBatches) {
  auto error = [](std::string_view json) {
    auto r = ParseFailureEventBatch(json);
    return r ? std::string("(no error)") : r.error().message();
  };
  EXPECT_EQ(error(R"({"events":[],"device":"x"})"), "event batch: unknown field 'device'");
  EXPECT_EQ(error("{}"), "event batch: missing field 'events'");
  EXPECT_EQ(error(R"({"events":{}})"), "events: must be an array, not object");
  EXPECT_EQ(error("[]"), "event batch: must be an object, not array");

  auto events = SampleBatch(3);
  events[2].event_id = events[0].event_id;
  EXPECT_EQ(error(SerializeFailureEventBatch(events)),
            "events[2].event_id: duplicates events[0].event_id");

  Json j = *ParseJson(SerializeFailureEventBatch(SampleBatch(3)), "test");
  j["events"][1]["kind"] = "boom";
  EXPECT_EQ(error(DumpJson(j)),
            "events[1].kind: 'boom' is not one of app_crash, app_exit, app_memory_limit, "
            "events_dropped, launch_failed");
}

}  // namespace
}  // namespace moat::formats
