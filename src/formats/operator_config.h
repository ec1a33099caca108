// The operator's "moat config": what the `moat` CLI needs to reach a service as one operator —
// the service URL, the service root certificate to trust, and the operator's certificate and
// private key. `moat-service init` writes the first administrator's; the file is mode 0600 and
// is the operator's credential: whoever holds it acts as that operator.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"
#include "core/json.h"

namespace moat::formats {

struct OperatorConfig {
  std::string service_url;    // "https://127.0.0.1:8443"
  std::string operator_name;  // informational
  std::string root_certificate_pem;
  std::string certificate_pem;
  std::string private_key_pem;  // SECURITY: secret
};

inline constexpr size_t kMaxOperatorConfigBytes = 64 * 1024;

Json ToJson(const OperatorConfig& config);
Result<OperatorConfig> ParseOperatorConfig(std::string_view json);

}  // namespace moat::formats
