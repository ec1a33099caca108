#include "net/http.h"

#include <algorithm>
#include <cctype>

#include "core/json.h"

namespace moat::net {

namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view FindHeader(const std::vector<std::pair<std::string, std::string>>& headers,
                            std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

}  // namespace

std::string_view HttpRequest::Header(std::string_view name) const {
  return FindHeader(headers, name);
}

std::string_view HttpResponse::Header(std::string_view name) const {
  return FindHeader(headers, name);
}

HttpResponse Problem(int status, std::string_view type_slug, std::string_view title,
                     std::string_view detail) {
  Json problem = Json::object();
  problem["type"] = std::string(kProblemTypePrefix) + std::string(type_slug);
  problem["title"] = std::string(title);
  problem["status"] = status;
  if (!detail.empty()) problem["detail"] = std::string(detail);
  HttpResponse response;
  response.status = status;
  response.content_type = std::string(kProblemContentType);
  // Invalid UTF-8 in a detail (e.g. echoing client input) is replaced, never thrown.
  response.body = problem.dump(-1, ' ', false, Json::error_handler_t::replace);
  return response;
}

}  // namespace moat::net
