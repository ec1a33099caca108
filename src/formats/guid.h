// GUIDs as Azure Sphere uses them (component IDs, image IDs, tenant IDs): the 36-character
// 8-4-4-4-12 hexadecimal form. Parsing accepts either case; ToString() is lowercase.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace moat::formats {

class Guid {
 public:
  Guid() = default;  // the nil GUID 00000000-0000-0000-0000-000000000000
  static Result<Guid> Parse(std::string_view text);
  static Guid FromBytes(const std::array<uint8_t, 16>& bytes) {
    Guid g;
    g.bytes_ = bytes;
    return g;
  }

  std::string ToString() const;
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  bool IsNil() const;

  auto operator<=>(const Guid&) const = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

}  // namespace moat::formats
