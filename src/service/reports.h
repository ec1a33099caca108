// Failure reports: what devices upload (POST /device/v1/reports), grouped into crash buckets,
// and exported as Azure Sphere-style CSV.
//
// A bucket is one crash as a developer sees it: the same stack signature (kind, component,
// signal and top frames — formats::StackSignature) in the same image, across all the tenant's
// devices. Events are idempotent per (device, event ID): a batch re-sent after a lost answer
// changes nothing. "events_dropped" events are kept as counted records and in no bucket.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "formats/failure_event.h"
#include "store/database.h"

namespace moat::service {

struct StoredBatch {
  size_t accepted = 0;
  size_t duplicates = 0;
};

// Stores `events` from `device_id` of `tenant_id`, received at `now`, in one transaction.
Result<StoredBatch> StoreFailureEvents(store::Session& session, std::string_view tenant_id,
                                       std::string_view device_id,
                                       std::span<const formats::FailureEvent> events, int64_t now);

inline constexpr size_t kMaxErrorReportRows = 100000;

struct ErrorReportQuery {
  std::string tenant_id;
  std::optional<std::string> device_id;
  int64_t since = 0;  // unix seconds: events whose last_time is at or after this
  size_t limit = kMaxErrorReportRows;
};

// CSV (RFC 4180, CRLF line ends) with the Azure Sphere columns — Device ID, Event Type, Event
// Class, Event Count, Description, Start Time, End Time — then Moat's: Image ID, Bucket, Stack
// Signature. Newest first.
Result<std::string> ErrorReportCsv(store::Database& db, const ErrorReportQuery& query);

}  // namespace moat::service
