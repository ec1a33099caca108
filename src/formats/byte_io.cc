#include "formats/byte_io.h"

#include <cstdlib>
#include <string>

#include <fmt/format.h>

namespace moat::formats {
namespace {

template <std::unsigned_integral T>
void PutBigEndian(std::vector<uint8_t>& out, T v) {
  for (size_t i = sizeof(T); i-- > 0;) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

Result<void> ByteReader::Need(uint64_t n, std::string_view what) const {
  if (n > remaining()) {
    std::string record = record_name_.empty()
                             ? std::string()
                             : fmt::format(" of {} {}", record_name_, record_index_);
    return Fail(ErrorCode::kInvalidArgument,
                "{}: truncated reading {}{} ({} bytes needed at offset {}, {} remain)", context_,
                what, record, n, pos_, remaining());
  }
  return Ok();
}

std::span<const uint8_t> ByteReader::Take(size_t n) {
  // SECURITY: every caller checks first; a bug there must not become an out-of-bounds read.
  if (n > remaining()) std::abort();
  auto out = bytes_.subspan(pos_, n);
  pos_ += n;
  return out;
}

void PutU8(std::vector<uint8_t>& out, uint8_t v) { out.push_back(v); }
void PutU16(std::vector<uint8_t>& out, uint16_t v) { PutBigEndian(out, v); }
void PutU32(std::vector<uint8_t>& out, uint32_t v) { PutBigEndian(out, v); }
void PutU64(std::vector<uint8_t>& out, uint64_t v) { PutBigEndian(out, v); }

void PutBytes(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

void PutBytes(std::vector<uint8_t>& out, std::string_view bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

}  // namespace moat::formats
