#include "device/agent/update_transport.h"

#include <fmt/format.h>

#include "formats/json_reader.h"

namespace moat::device::agent {
namespace {

Error FromStatus(std::string_view what, const net::HttpResponse& r) {
  const ErrorCode code = r.status == 404                      ? ErrorCode::kNotFound
                         : r.status == 401 || r.status == 403 ? ErrorCode::kPermissionDenied
                         : r.status >= 500                    ? ErrorCode::kUnavailable
                                                              : ErrorCode::kInvalidArgument;
  return Error(code, fmt::format("{}: HTTP {}: {}", what, r.status, r.body.substr(0, 200)));
}

}  // namespace

Result<std::optional<std::string>> HttpsUpdateTransport::DeviceGroup() {
  MOAT_ASSIGN_OR_RETURN(auto client, attestor_.Connect(/*certified_only=*/true, 64 << 10));
  MOAT_ASSIGN_OR_RETURN(net::HttpResponse r, client->Send("GET", "/device/v1/whoami"));
  if (r.status != 200) return Fail(FromStatus("whoami", r));
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(r.body, "whoami response"));
  if (!j.is_object()) return Fail(ErrorCode::kInvalidArgument, "whoami: not a JSON object");
  auto it = j.find("device_group");
  if (it == j.end() || it->is_null()) return std::optional<std::string>();
  formats::ObjectReader g(*it, "whoami.device_group");
  MOAT_TRY(g.status());
  MOAT_ASSIGN_OR_RETURN(std::string id, g.RequiredString("id", 64));
  return std::optional<std::string>(std::move(id));
}

Result<std::string> HttpsUpdateTransport::Fetch(std::string_view group, std::string_view path,
                                                size_t max_bytes) {
  // A generous whole-transfer timeout: 60 s plus 1 s per 256 KiB.
  const auto timeout = std::chrono::seconds(60 + static_cast<int64_t>(max_bytes >> 18));
  MOAT_ASSIGN_OR_RETURN(auto client,
                        attestor_.Connect(/*certified_only=*/true, max_bytes, timeout));
  const std::string url = fmt::format("/device/v1/repo/{}/{}", group, path);
  auto r = client->Send("GET", url);
  if (!r) {
    if (r.error().code() == ErrorCode::kLimitExceeded) {
      return Fail(ErrorCode::kLimitExceeded, "{}: more than {} bytes", path, max_bytes);
    }
    return Fail(r.error());
  }
  if (r->status != 200) return Fail(FromStatus(url, *r));
  if (r->body.size() > max_bytes) {
    return Fail(ErrorCode::kLimitExceeded, "{}: more than {} bytes", path, max_bytes);
  }
  return std::move(r->body);
}

Result<void> HttpsUpdateTransport::PostStatus(std::string_view body) {
  MOAT_ASSIGN_OR_RETURN(auto client, attestor_.Connect(/*certified_only=*/true, 64 << 10));
  MOAT_ASSIGN_OR_RETURN(net::HttpResponse r, client->Send("POST", "/device/v1/status", body));
  if (r.status != 204 && r.status != 200) return Fail(FromStatus("status report", r));
  return Ok();
}

}  // namespace moat::device::agent
