#include "formats/guid.h"

#include "core/encoding.h"

namespace moat::formats {

Result<Guid> Guid::Parse(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Fail(ErrorCode::kInvalidArgument, "'{}' is not a GUID ({})", text.substr(0, 64), why);
  };
  if (text.size() != 36) return bad("expected 36 characters like 01234567-89ab-cdef-0123-456789abcdef");
  std::string hex;
  for (size_t i = 0; i < text.size(); ++i) {
    bool dash_pos = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_pos) {
      if (text[i] != '-') return bad("dashes must be at positions 9, 14, 19 and 24");
      continue;
    }
    hex.push_back(text[i]);
  }
  auto bytes = HexDecode(hex);
  if (!bytes) return bad("non-hexadecimal character");
  Guid g;
  std::copy(bytes->begin(), bytes->end(), g.bytes_.begin());
  return g;
}

std::string Guid::ToString() const {
  std::string h = HexEncode(bytes_);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20);
}

bool Guid::IsNil() const {
  for (uint8_t b : bytes_) {
    if (b != 0) return false;
  }
  return true;
}

}  // namespace moat::formats
