#include "cli/session.h"

#include <cstdlib>

#include "core/file.h"
#include "crypto/key.h"
#include "crypto/x509.h"
#include "formats/operator_config.h"

namespace moat::cli {

Result<Session> Session::Open(const GlobalOptions& g) {
  std::string path = g.config;
  if (path.empty()) {
    const char* env = std::getenv("MOAT_CONFIG");
    if (env != nullptr) path = env;
  }
  if (path.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "no operator config: pass --config FILE or set MOAT_CONFIG (moat-service init "
                "writes the first administrator's)");
  }
  MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(path, formats::kMaxOperatorConfigBytes));
  auto config = formats::ParseOperatorConfig(text);
  if (!config) return Fail(config.error().WithContext(path));
  MOAT_ASSIGN_OR_RETURN(auto root, crypto::Certificate::FromPem(config->root_certificate_pem));
  MOAT_ASSIGN_OR_RETURN(auto certs, crypto::Certificate::ParsePemChain(config->certificate_pem));
  MOAT_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::FromPem(config->private_key_pem));
  net::HttpsClientConfig client;
  client.base_url = config->service_url;
  client.tls.server_roots = {root};
  client.tls.certificate = certs.front();
  client.tls.chain.assign(certs.begin() + 1, certs.end());
  client.tls.key = key;
  MOAT_ASSIGN_OR_RETURN(auto http, net::HttpsClient::Create(std::move(client)));
  return Session(std::move(http), config->service_url);
}

namespace {

// A non-2xx answer as an error carrying the problem's detail.
Error ProblemError(const net::HttpResponse& response) {
  auto parsed = ParseJson(response.body, "response");
  std::string detail = parsed && parsed->contains("detail") && (*parsed)["detail"].is_string()
                           ? (*parsed)["detail"].get<std::string>()
                           : response.body.substr(0, 200);
  ErrorCode code = response.status == 404   ? ErrorCode::kNotFound
                   : response.status == 403 ? ErrorCode::kPermissionDenied
                   : response.status == 401 ? ErrorCode::kUnauthenticated
                   : response.status == 409 ? ErrorCode::kAlreadyExists
                                            : ErrorCode::kInvalidArgument;
  return Error(code, fmt::format("{} (HTTP {})", detail, response.status));
}

bool IsSuccess(const net::HttpResponse& r) { return r.status >= 200 && r.status <= 299; }

}  // namespace

Result<Json> Session::Call(std::string_view method, std::string_view path, const Json* body) {
  std::string payload = body ? DumpJson(*body) : std::string();
  auto response = http_->Send(method, path, payload);
  if (!response) {
    return Fail(response.error().WithContext(fmt::format("{} {}", method, url_)));
  }
  if (!IsSuccess(*response)) return Fail(ProblemError(*response));
  return ParseJson(response->body, "response", JsonLimits{.max_bytes = 64 << 20});
}

Result<Json> Session::Upload(std::string_view path, std::string_view bytes,
                             std::string_view content_type) {
  auto response = http_->Send("POST", path, bytes, content_type);
  if (!response) return Fail(response.error().WithContext(fmt::format("POST {}", url_)));
  if (!IsSuccess(*response)) return Fail(ProblemError(*response));
  return ParseJson(response->body, "response");
}

Result<std::string> Session::CallRaw(std::string_view method, std::string_view path,
                                     std::string_view body, std::string_view content_type) {
  auto response = http_->Send(method, path, body, content_type);
  if (!response) {
    return Fail(response.error().WithContext(fmt::format("{} {}", method, url_)));
  }
  if (!IsSuccess(*response)) return Fail(ProblemError(*response));
  return std::move(response->body);
}

Result<std::string> Session::Download(std::string_view path) {
  auto response = http_->Send("GET", path);
  if (!response) return Fail(response.error().WithContext(fmt::format("GET {}", url_)));
  if (!IsSuccess(*response)) return Fail(ProblemError(*response));
  return std::move(response->body);
}

void PrintTable(std::ostream& out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < cells.size(); ++i) {
      text += cells[i];
      if (i + 1 < cells.size()) text += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    out << text << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
  if (rows.empty()) out << "(none)\n";
}

std::string Str(const Json& j, std::string_view key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string EncodeQueryValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') {
      out.push_back(c);
    } else {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return out;
}

}  // namespace moat::cli
