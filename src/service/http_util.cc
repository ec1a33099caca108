#include "service/http_util.h"

#include <algorithm>
#include <cctype>

#include "core/log.h"

namespace moat::service {
namespace {

using net::HttpRequest;
using net::HttpResponse;

std::string_view StatusSlug(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid-request";
    case ErrorCode::kNotFound:
      return "not-found";
    case ErrorCode::kAlreadyExists:
      return "already-exists";
    case ErrorCode::kPermissionDenied:
      return "forbidden";
    case ErrorCode::kUnauthenticated:
      return "unauthenticated";
    case ErrorCode::kVerificationFailed:
      return "verification-failed";
    case ErrorCode::kLimitExceeded:
      return "too-large";
    case ErrorCode::kFailedPrecondition:
      return "conflict";
    case ErrorCode::kUnavailable:
      return "unavailable";
    default:
      return "internal-error";
  }
}

int HttpStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kVerificationFailed:
      return 400;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kLimitExceeded:
      return 413;
    case ErrorCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

}  // namespace

HttpResponse ErrorResponse(const Error& e) {
  int status = HttpStatus(e.code());
  if (status >= 500) {
    // SECURITY: internal details stay in the log, not in the answer.
    log::Error("request failed: {}", e.message());
    return net::Problem(status, StatusSlug(e.code()), "Internal error",
                        "the service could not complete the request; see its log");
  }
  std::string_view title = status == 401   ? "Not authenticated"
                           : status == 403 ? "Forbidden"
                           : status == 404 ? "Not found"
                           : status == 409 ? "Conflict"
                           : status == 413 ? "Too large"
                                           : "Bad request";
  return net::Problem(status, StatusSlug(e.code()), title, e.message());
}

HttpResponse JsonResponse(int status, const Json& body) {
  HttpResponse r;
  r.status = status;
  r.body = DumpJson(body);
  return r;
}

Result<void> ValidateName(std::string_view what, std::string_view name) {
  auto ok_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ' ';
  };
  if (name.empty() || name.size() > kMaxNameBytes ||
      !std::isalnum(static_cast<unsigned char>(name[0])) ||
      !std::all_of(name.begin(), name.end(), ok_char) || name.back() == ' ') {
    return Fail(ErrorCode::kInvalidArgument,
                "{} name '{}' must be 1..{} characters of letters, digits, space, '-', '_' and "
                "'.', starting with a letter or digit",
                what, name.substr(0, kMaxNameBytes + 8), kMaxNameBytes);
  }
  return Ok();
}

Result<Json> ParseBody(const HttpRequest& req, size_t max_bytes) {
  if (req.body.empty()) return Fail(ErrorCode::kInvalidArgument, "the request needs a JSON body");
  auto ct = req.Header("content-type");
  if (!ct.starts_with("application/json")) {
    return Fail(ErrorCode::kInvalidArgument, "Content-Type must be application/json, not '{}'",
                ct.substr(0, 64));
  }
  return ParseJson(req.body, "body", JsonLimits{.max_bytes = max_bytes, .max_depth = 8});
}

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

Result<std::string> DecodePathSegment(std::string_view segment) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(segment.size());
  for (size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] != '%') {
      out.push_back(segment[i]);
      continue;
    }
    const int hi = i + 2 < segment.size() ? hex(segment[i + 1]) : -1;
    const int lo = i + 2 < segment.size() ? hex(segment[i + 2]) : -1;
    // '%00' and '%2F' would smuggle a NUL or a separator into a name.
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0) || (hi == 2 && lo == 15)) {
      return Fail(ErrorCode::kInvalidArgument, "malformed path segment '{}'",
                  segment.substr(0, 128));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string QueryParam(std::string_view query, std::string_view key) {
  size_t i = 0;
  while (i <= query.size()) {
    size_t amp = query.find('&', i);
    if (amp == std::string_view::npos) amp = query.size();
    auto part = query.substr(i, amp - i);
    auto eq = part.find('=');
    if (eq != std::string_view::npos && part.substr(0, eq) == key) {
      // Decodes '+' and %XX; anything malformed is kept as written (and then fails validation).
      std::string_view raw = part.substr(eq + 1);
      std::string v;
      for (size_t k = 0; k < raw.size(); ++k) {
        if (raw[k] == '+') {
          v.push_back(' ');
        } else if (raw[k] == '%' && k + 2 < raw.size() &&
                   std::isxdigit(static_cast<unsigned char>(raw[k + 1])) &&
                   std::isxdigit(static_cast<unsigned char>(raw[k + 2]))) {
          v.push_back(static_cast<char>(std::stoi(std::string(raw.substr(k + 1, 2)), nullptr, 16)));
          k += 2;
        } else {
          v.push_back(raw[k]);
        }
      }
      return v;
    }
    i = amp + 1;
  }
  return {};
}

HttpResponse ProblemResponse(int status, std::string_view slug, std::string_view detail) {
  std::string_view title = status == 401   ? "Not authenticated"
                           : status == 403 ? "Forbidden"
                           : status == 404 ? "Not found"
                           : status == 405 ? "Method not allowed"
                           : status == 409 ? "Conflict"
                           : status == 413 ? "Too large"
                                           : "Bad request";
  return net::Problem(status, slug, title, detail);
}

HttpResponse MethodNotAllowed(const HttpRequest& req) {
  return net::Problem(
      405, "method-not-allowed", "Method not allowed",
      fmt::format("{} is not supported on {}", req.method.substr(0, 16), req.path.substr(0, 128)));
}

}  // namespace moat::service
