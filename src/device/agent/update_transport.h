// The update agent's transport over HTTPS (wire contract: docs/moatd.md, "Updates"):
//   GET  /device/v1/whoami                       -> "device_group": {"id", ...} or null
//   GET  /device/v1/repo/<group>/<path>          -> the repository file (404: absent)
//   POST /device/v1/status                       -> 204
// with the device's client certificate, else its update certificate (Attestor::Connect with
// certified_only). Each repository fetch uses a connection whose response limit is that fetch's
// max_bytes, so a server cannot make moatd buffer more than the TUF metadata allows (libcurl
// aborts the transfer past it).
#pragma once

#include "device/agent/attestor.h"
#include "device/update/update_agent.h"

namespace moat::device::agent {

class HttpsUpdateTransport final : public update::UpdateTransport {
 public:
  explicit HttpsUpdateTransport(const Attestor& attestor) : attestor_(attestor) {}
  Result<std::optional<std::string>> DeviceGroup() override;
  Result<std::string> Fetch(std::string_view group, std::string_view path,
                            size_t max_bytes) override;
  Result<void> PostStatus(std::string_view body) override;

 private:
  const Attestor& attestor_;
};

}  // namespace moat::device::agent
