#include "formats/operator_config.h"

#include "formats/json_reader.h"

namespace moat::formats {

Json ToJson(const OperatorConfig& c) {
  return Json{{"format", "moat-operator-config/1"}, {"service_url", c.service_url},
              {"operator", c.operator_name},        {"root_certificate", c.root_certificate_pem},
              {"certificate", c.certificate_pem},   {"private_key", c.private_key_pem}};
}

Result<OperatorConfig> ParseOperatorConfig(std::string_view json) {
  MOAT_ASSIGN_OR_RETURN(
      Json j, ParseJson(json, "operator config",
                        JsonLimits{.max_bytes = kMaxOperatorConfigBytes, .max_depth = 4}));
  ObjectReader r(j, "operator config");
  MOAT_TRY(r.status());
  MOAT_ASSIGN_OR_RETURN(std::string format, r.RequiredString("format", 64));
  if (format != "moat-operator-config/1") {
    return Fail(ErrorCode::kInvalidArgument,
                "operator config: format '{}' is not moat-operator-config/1", format);
  }
  OperatorConfig c;
  MOAT_ASSIGN_OR_RETURN(c.service_url, r.RequiredString("service_url", 512));
  if (!c.service_url.starts_with("https://")) {
    return Fail(ErrorCode::kInvalidArgument,
                "operator config.service_url: '{}' must start with https://", c.service_url);
  }
  MOAT_ASSIGN_OR_RETURN(c.operator_name, r.OptionalString("operator", 128));
  MOAT_ASSIGN_OR_RETURN(c.root_certificate_pem, r.RequiredString("root_certificate", 16384));
  MOAT_ASSIGN_OR_RETURN(c.certificate_pem, r.RequiredString("certificate", 16384));
  MOAT_ASSIGN_OR_RETURN(c.private_key_pem, r.RequiredString("private_key", 16384));
  MOAT_TRY(r.NoOtherFields());
  return c;
}

}  // namespace moat::formats
