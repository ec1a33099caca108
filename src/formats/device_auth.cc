#include "formats/device_auth.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/encoding.h"

namespace moat::formats {

namespace {

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// The printable start of an unknown request word, for the error message (never a digest: the
// word stops at the first character that is not a lower-case letter).
std::string QuoteWord(std::string_view message) {
  size_t n = 0;
  while (n < message.size() && n < 16 && message[n] >= 'a' && message[n] <= 'z') ++n;
  return n == 0 ? std::string("(no word)") : fmt::format("'{}'", message.substr(0, n));
}

}  // namespace

Result<DeviceAuthRequest> ParseDeviceAuthRequest(std::string_view message) {
  if (message.size() > kMaxDeviceAuthRequest) {
    return Fail(ErrorCode::kLimitExceeded, "request of {} bytes (at most {})", message.size(),
                kMaxDeviceAuthRequest);
  }
  if (message.ends_with('\n')) message.remove_suffix(1);
  if (message == "chain") return DeviceAuthRequest{DeviceAuthRequest::Kind::kChain, {}};
  constexpr std::string_view kSign = "sign ";
  if (message.starts_with(kSign)) {
    std::string_view hex = message.substr(kSign.size());
    if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), IsLowerHex)) {
      return Fail(ErrorCode::kInvalidArgument,
                  "'sign' needs a SHA-256 digest as 64 lower-case hex digits ({} characters given)",
                  hex.size());
    }
    DeviceAuthRequest request{DeviceAuthRequest::Kind::kSign, {}};
    MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, HexDecode(hex));
    std::copy(bytes.begin(), bytes.end(), request.digest.begin());
    return request;
  }
  return Fail(ErrorCode::kInvalidArgument, "unknown request {} (chain, sign <digest>)",
              QuoteWord(message));
}

std::string FormatDeviceAuthRequest(const DeviceAuthRequest& request) {
  return request.kind == DeviceAuthRequest::Kind::kChain
             ? std::string("chain\n")
             : fmt::format("sign {}\n", HexEncode(request.digest));
}

}  // namespace moat::formats
