// The device-authentication channel's request format (docs/supervisor.md, "Device
// authentication"): what an app with Capabilities.DeviceAuthentication sends moatd over
// MOAT_DEVICE_AUTH_FD, one SOCK_SEQPACKET message per request, ASCII:
//   "chain\n"                  the device's client certificate chain, PEM, leaf first
//   "sign <64 hex digits>\n"   an ECDSA P-256 signature over that SHA-256 digest
// The final "\n" is optional; anything else (other words, upper-case hex, spaces, NUL bytes, a
// message longer than kMaxDeviceAuthRequest) is refused. moatd answers "ok\n<PEM>",
// "ok <hex DER signature>\n" or "error <reason>\n".
//
// SECURITY: the parser faces untrusted app input: strict and bounded (fuzz/device_auth_fuzz.cc).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace moat::formats {

inline constexpr size_t kMaxDeviceAuthRequest = 128;
// The largest answer (a chain of a few certificates fits easily).
inline constexpr size_t kMaxDeviceAuthAnswer = 64 << 10;

struct DeviceAuthRequest {
  enum class Kind { kChain, kSign };
  Kind kind = Kind::kChain;
  std::array<uint8_t, 32> digest{};  // kSign

  bool operator==(const DeviceAuthRequest&) const = default;
};

// Parses one request message. kInvalidArgument naming what is wrong (never echoing a digest),
// kLimitExceeded for a message longer than kMaxDeviceAuthRequest.
Result<DeviceAuthRequest> ParseDeviceAuthRequest(std::string_view message);

// The canonical message for `request` ("chain\n" or "sign <hex>\n"), which parses back to it.
std::string FormatDeviceAuthRequest(const DeviceAuthRequest& request);

}  // namespace moat::formats
