// Hex and base64 (RFC 4648) encoding. Decoders are strict: they reject any character outside
// the alphabet, bad padding and non-canonical trailing bits, naming the offending position.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat {

// Lowercase hex.
std::string HexEncode(std::span<const uint8_t> data);
std::string HexEncode(std::string_view data);
// Accepts upper- and lowercase digits; the length must be even.
Result<std::vector<uint8_t>> HexDecode(std::string_view text);

enum class Base64Alphabet { kStandard, kUrl };
enum class Base64Padding { kWith, kWithout };

std::string Base64Encode(std::span<const uint8_t> data,
                         Base64Alphabet alphabet = Base64Alphabet::kStandard,
                         Base64Padding padding = Base64Padding::kWith);
// Decodes with the given alphabet; padding is required when `padding` is kWith and
// forbidden when it is kWithout.
Result<std::vector<uint8_t>> Base64Decode(std::string_view text,
                                          Base64Alphabet alphabet = Base64Alphabet::kStandard,
                                          Base64Padding padding = Base64Padding::kWith);

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline std::string_view AsChars(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace moat
