// Small pieces every moat-service handler uses: mapping errors to RFC 9457 problems, JSON
// responses, strict request bodies, path segments and query parameters, name validation.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "net/http.h"

namespace moat::service {

inline constexpr size_t kMaxNameBytes = 64;

// A problem response for `e`: 4xx with e.message() as the detail, or (for anything that is
// not the caller's fault) a 500 whose detail says only "see the log" while the message is
// logged.
net::HttpResponse ErrorResponse(const Error& e);
// As above with an explicit status and problem type slug (urn:moat:problem:<slug>).
net::HttpResponse ProblemResponse(int status, std::string_view slug, std::string_view detail);
net::HttpResponse JsonResponse(int status, const Json& body);
net::HttpResponse MethodNotAllowed(const net::HttpRequest& req);

// The request's JSON body: Content-Type application/json, at most `max_bytes`, depth 8.
Result<Json> ParseBody(const net::HttpRequest& req, size_t max_bytes = 64 * 1024);

// "/api/v1/tenants/acme" -> {"api", "v1", "tenants", "acme"} (empty segments dropped).
std::vector<std::string_view> Segments(std::string_view path);

// A path segment percent-decoded ("Field%20Test" -> "Field Test"). kInvalidArgument for a
// malformed escape or a decoded NUL or '/'.
Result<std::string> DecodePathSegment(std::string_view segment);

// The value of `key` in "a=1&b=2", '+' and %XX decoded; "" when absent.
std::string QueryParam(std::string_view query, std::string_view key);

// 1..kMaxNameBytes of letters, digits, space, '-', '_' and '.', starting with a letter or
// digit and not ending with a space. `what` names the thing in the error ("tenant").
Result<void> ValidateName(std::string_view what, std::string_view name);

}  // namespace moat::service
