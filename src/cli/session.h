// An operator's connection to moat-service, and the output helpers the online commands share.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/online_commands.h"
#include "core/error.h"
#include "core/json.h"
#include "net/https_client.h"

namespace moat::cli {

class Session {
 public:
  // Reads the operator config (--config, else $MOAT_CONFIG) and prepares a mutual-TLS client.
  static Result<Session> Open(const GlobalOptions& g);

  // Sends a request; a non-2xx answer becomes an error carrying the problem's detail.
  Result<Json> Call(std::string_view method, std::string_view path, const Json* body = nullptr);
  // The same for a body that is not JSON (an upload, a CSV download): the raw answer body.
  Result<std::string> CallRaw(std::string_view method, std::string_view path,
                              std::string_view body = {},
                              std::string_view content_type = "application/json");
  // POSTs raw bytes (e.g. an image package) and reads a JSON answer, like Call.
  Result<Json> Upload(std::string_view path, std::string_view bytes, std::string_view content_type);
  // GETs a raw body (e.g. an image package); a non-2xx answer becomes an error, like Call.
  Result<std::string> Download(std::string_view path);

 private:
  Session(std::unique_ptr<net::HttpsClient> http, std::string url)
      : http_(std::move(http)), url_(std::move(url)) {}
  std::unique_ptr<net::HttpsClient> http_;
  std::string url_;
};

// Prints rows as an aligned table ("(none)" when there are no rows).
void PrintTable(std::ostream& out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

// j[key] as text: strings as they are, null or absent as "-", anything else as JSON.
std::string Str(const Json& j, std::string_view key);

// Percent-encodes everything but [A-Za-z0-9._-], for a path segment or query value.
std::string EncodeQueryValue(std::string_view v);

}  // namespace moat::cli
