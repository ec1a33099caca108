// Fuzzes the device-authentication request parser (formats/device_auth.h), which reads what a
// sandboxed app sends moatd. Whatever parses must format back to a message that parses to the
// same request (a mismatch traps), and nothing longer than the limit may parse.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "formats/device_auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view message(reinterpret_cast<const char*>(data), size);
  auto request = moat::formats::ParseDeviceAuthRequest(message);
  if (!request) return 0;
  if (size > moat::formats::kMaxDeviceAuthRequest) __builtin_trap();
  const std::string canonical = moat::formats::FormatDeviceAuthRequest(*request);
  auto again = moat::formats::ParseDeviceAuthRequest(canonical);
  if (!again || !(*again == *request)) __builtin_trap();
  return 0;
}
