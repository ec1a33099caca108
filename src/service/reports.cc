#include "service/reports.h"

#include <fmt/format.h>

#include "core/clock.h"
#include "core/encoding.h"
#include "crypto/digest.h"

namespace moat::service {
namespace {

// RFC 4180: quoted when it holds a comma, quote or line break; quotes doubled. A leading
// '=', '+', '-' or '@' is prefixed with a quote so a spreadsheet does not run it as a formula
// (device-supplied text reaches this file).
std::string CsvField(std::string_view v) {
  std::string s(v);
  if (!s.empty() && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@')) s = "'" + s;
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// The bucket row's ID: stable for (tenant, image, signature), so replicas agree without a lookup.
std::string BucketId(std::string_view tenant_id, std::string_view image_id,
                     std::string_view signature) {
  return HexEncode(crypto::Sha256(fmt::format("{}\n{}\n{}", tenant_id, image_id, signature)))
      .substr(0, 32);
}

}  // namespace

Result<StoredBatch> StoreFailureEvents(store::Session& s, std::string_view tenant_id,
                                       std::string_view device_id,
                                       std::span<const formats::FailureEvent> events, int64_t now) {
  StoredBatch stored;
  for (const formats::FailureEvent& e : events) {
    const bool dropped = e.kind == formats::FailureKind::kEventsDropped;
    const std::string description = formats::AzureSphereDescription(e);
    const std::string image_id = dropped ? "" : e.image_id.ToString();
    const std::string component_id = dropped ? "" : e.component_id.ToString();
    const std::string signature = dropped ? "" : formats::StackSignature(e);
    const std::string bucket = dropped ? "" : BucketId(tenant_id, image_id, signature);
    // Idempotent per (device, event ID): a re-sent event changes nothing.
    auto seen = s.QueryOne("SELECT 1 FROM failure_events WHERE device_id = ? AND event_id = ?",
                           {std::string(device_id), e.event_id});
    if (seen) {
      ++stored.duplicates;
      continue;
    }
    if (seen.error().code() != ErrorCode::kNotFound) return Fail(seen.error());
    if (!dropped) {
      MOAT_ASSIGN_OR_RETURN(
          int64_t updated,
          s.Execute("UPDATE failure_buckets SET event_count = event_count + ?, last_seen = "
                    "CASE WHEN last_seen > ? THEN last_seen ELSE ? END WHERE id = ?",
                    {static_cast<int64_t>(e.count), store::UnixSeconds(e.last_time),
                     store::UnixSeconds(e.last_time), bucket}));
      if (updated == 0) {
        MOAT_TRY(
            s.Execute("INSERT INTO failure_buckets (id, tenant_id, stack_signature, image_id, "
                      "component_id, kind, description, event_count, first_seen, last_seen) VALUES "
                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      {bucket, std::string(tenant_id), signature, image_id, component_id,
                       std::string(formats::FailureKindName(e.kind)), description,
                       static_cast<int64_t>(e.count), store::UnixSeconds(e.first_time),
                       store::UnixSeconds(e.last_time)}));
      }
    }
    // Built one by one: GCC 12 misreads a braced list of variants holding monostate here
    // (-Wmaybe-uninitialized).
    std::vector<store::Value> row;
    row.reserve(16);
    auto text_or_null = [&row](const std::string& v) {
      if (v.empty()) {
        row.emplace_back(store::kNull);
      } else {
        row.emplace_back(v);
      }
    };
    row.emplace_back(std::string(device_id));
    row.emplace_back(e.event_id);
    row.emplace_back(std::string(tenant_id));
    text_or_null(bucket);
    row.emplace_back(std::string(formats::FailureKindName(e.kind)));
    row.emplace_back(std::string(formats::EventTypeName(e.type)));
    row.emplace_back(std::string(formats::EventClassName(e.event_class)));
    text_or_null(component_id);
    text_or_null(image_id);
    row.emplace_back(static_cast<int64_t>(e.count));
    row.emplace_back(description);
    text_or_null(signature);
    row.emplace_back(store::UnixSeconds(e.first_time));
    row.emplace_back(store::UnixSeconds(e.last_time));
    row.emplace_back(now);
    row.emplace_back(DumpJson(formats::ToJson(e)));
    MOAT_TRY(
        s.Execute("INSERT INTO failure_events (device_id, event_id, tenant_id, bucket_id, kind, "
                  "event_type, event_class, component_id, image_id, event_count, description, "
                  "stack_signature, first_time, last_time, received_at, event_json) VALUES "
                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  row));
    ++stored.accepted;
  }
  return stored;
}

Result<std::string> ErrorReportCsv(store::Database& db, const ErrorReportQuery& q) {
  std::string sql =
      "SELECT device_id, event_type, event_class, event_count, description, first_time, "
      "last_time, image_id, bucket_id, stack_signature FROM failure_events WHERE tenant_id = ? "
      "AND last_time >= ?";
  std::vector<store::Value> params = {q.tenant_id, q.since};
  if (q.device_id) {
    sql += " AND device_id = ?";
    params.push_back(*q.device_id);
  }
  sql += " ORDER BY last_time DESC, device_id, event_id LIMIT ?";
  params.push_back(static_cast<int64_t>(std::min(q.limit, kMaxErrorReportRows)));
  MOAT_ASSIGN_OR_RETURN(auto rows, db.Query(sql, params));
  std::string csv =
      "Device ID,Event Type,Event Class,Event Count,Description,Start Time,End Time,Image ID,"
      "Bucket,Stack Signature\r\n";
  for (const auto& r : rows) {
    auto text = [&](size_t i) { return r.IsNull(i) ? std::string() : *r.Text(i); };
    csv += fmt::format("{},{},{},{},{},{},{},{},{},{}\r\n", CsvField(text(0)), CsvField(text(1)),
                       CsvField(text(2)), *r.Int(3), CsvField(text(4)),
                       FormatRfc3339(store::FromUnixSeconds(*r.Int(5))),
                       FormatRfc3339(store::FromUnixSeconds(*r.Int(6))), CsvField(text(7)),
                       CsvField(text(8)), CsvField(text(9)));
  }
  return csv;
}

}  // namespace moat::service
