// Failure events: what a device records when an app exits abnormally (and when its bounded
// queue had to drop events), and how they travel to the service as JSON.
// Field reference: docs/formats/failure-event.md.
//
// Readers are strict: unknown fields, wrong types, malformed UUIDs, out-of-range numbers,
// count 0, last_time before first_time, too many frames and oversize documents are errors
// naming the field ("event.stack[3].build_id: ..."). Addresses travel as "0x..." hex strings
// (JSON numbers lose precision above 2^53); times as RFC 3339 UTC with one-second precision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "core/json.h"
#include "formats/guid.h"

namespace moat::formats {

enum class EventType { kUnplanned, kPlanned };  // "unplanned" / "planned"
enum class EventClass { kApplication, kOs };    // "app" / "os"
enum class FailureKind {
  kAppCrash,        // "app_crash": killed by a signal
  kAppExit,         // "app_exit": non-zero exit status
  kAppMemoryLimit,  // "app_memory_limit": killed for exceeding its memory limit
  kEventsDropped,   // "events_dropped": the device queue dropped `count` events
  kLaunchFailed,    // "launch_failed": the app could not be started (error_number says why)
};

inline constexpr size_t kMaxStackFrames = 64;
inline constexpr size_t kMaxEventJsonBytes = 128 << 10;
inline constexpr size_t kMaxEventBatchJsonBytes = 1 << 20;
inline constexpr size_t kMaxEventBatchEvents = 1000;

struct StackFrame {
  uint64_t pc = 0;
  std::string module;    // file name of the ELF ("app", "libc.so.6"): 1..255 bytes, no '/'
  std::string build_id;  // lowercase hex, even length, <= 128 digits; may be empty
  uint64_t offset = 0;   // pc - module load base
  std::string symbol;    // optional, <= 512 bytes, no control characters

  bool operator==(const StackFrame&) const = default;
};

struct FailureEvent {
  std::string event_id;  // lowercase UUID text; idempotency key for uploads; never nil
  FailureKind kind = FailureKind::kAppCrash;
  EventType type = EventType::kUnplanned;
  EventClass event_class = EventClass::kApplication;
  Guid component_id;  // required (non-nil) for every kind but kEventsDropped
  Guid image_id;
  int signal = 0;        // 0..64; kAppCrash needs 1..64
  int exit_status = 0;   // 0..255; kAppExit needs 1..255
  int error_number = 0;  // errno, 0..4095
  int code = 0;          // si_code (may be negative)
  std::optional<uint64_t> pc, lr, sp, fault_address;
  std::vector<StackFrame> stack;     // top frame first, <= kMaxStackFrames
  SystemTime first_time, last_time;  // one-second precision, years 1970..2261, first <= last
  uint32_t count = 1;                // >= 1

  bool operator==(const FailureEvent&) const = default;
};

// Stable names used in JSON: "app_crash", "unplanned", "app", ...
std::string_view FailureKindName(FailureKind kind);
std::string_view EventTypeName(EventType type);
std::string_view EventClassName(EventClass event_class);

// Never fails. Times are written with one-second precision; unset optionals are omitted.
Json ToJson(const FailureEvent& event);
// `path` names the value in errors, e.g. "events[3]".
Result<FailureEvent> FailureEventFromJson(const Json& json, std::string_view path = "event");
// Strict JSON text of one event, at most kMaxEventJsonBytes.
Result<FailureEvent> ParseFailureEvent(std::string_view json);

// An upload batch: {"events":[...]} with at most `max_events` (capped at kMaxEventBatchEvents)
// events, at most kMaxEventBatchJsonBytes, and no event_id twice.
Result<std::vector<FailureEvent>> ParseFailureEventBatch(std::string_view json,
                                                         size_t max_events = kMaxEventBatchEvents);
std::string SerializeFailureEventBatch(std::span<const FailureEvent> events);

// The event in Azure Sphere's error-report "Description" style, so exported CSVs read like
// theirs (addresses as 8+ uppercase hex digits without "0x"):
//   AppCrash (pc=213ECC62; lr=2136E6F7; sp=BE96DC28; signo=11; errno=0; code=0; component_id=…)
//   AppCrash (exit_status=11; signal_status=11; signal_code=3; component_id=…; image_id=…)
//       (a crash without registers, and a memory-limit kill, which Azure Sphere reports as a
//        crash by SIGKILL)
//   AppExit (exit_code=1; component_id=…; image_id=…)
//   EventsDropped (count=N)
//   AppLaunchFailed (errno=2; component_id=…; image_id=…)   (a Moat extension)
std::string AzureSphereDescription(const FailureEvent& event);

// Stable crash-bucket key: lowercase hex SHA-256 over the kind, component_id, signal and the
// top (<= 8) frames' (module, build_id, offset) — never over pc values, times or counts, so
// one crash on different devices and ASLR layouts lands in one bucket.
std::string StackSignature(const FailureEvent& event);

}  // namespace moat::formats
