#include "core/encoding.h"

#include <array>

namespace moat {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";
constexpr char kB64Std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::array<int8_t, 256> MakeDecodeTable(const char* alphabet) {
  std::array<int8_t, 256> t{};
  t.fill(-1);
  for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
  return t;
}

}  // namespace

std::string HexEncode(std::span<const uint8_t> data) {
  std::string out;
  out.reserve(data.size() * 2);
  for (uint8_t b : data) {
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 0xf]);
  }
  return out;
}

std::string HexEncode(std::string_view data) { return HexEncode(AsBytes(data)); }

Result<std::vector<uint8_t>> HexDecode(std::string_view text) {
  if (text.size() % 2 != 0) {
    return Fail(ErrorCode::kInvalidArgument, "hex: odd number of digits ({})", text.size());
  }
  std::vector<uint8_t> out(text.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(text[2 * i]);
    int lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return Fail(ErrorCode::kInvalidArgument, "hex: invalid digit at position {}",
                  hi < 0 ? 2 * i : 2 * i + 1);
    }
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::string Base64Encode(std::span<const uint8_t> data, Base64Alphabet alphabet,
                         Base64Padding padding) {
  const char* a = alphabet == Base64Alphabet::kUrl ? kB64Url : kB64Std;
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = uint32_t{data[i]} << 16 | uint32_t{data[i + 1]} << 8 | data[i + 2];
    out.push_back(a[v >> 18]);
    out.push_back(a[(v >> 12) & 63]);
    out.push_back(a[(v >> 6) & 63]);
    out.push_back(a[v & 63]);
  }
  size_t rest = data.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t{data[i]} << 16 | (rest == 2 ? uint32_t{data[i + 1]} << 8 : 0);
    out.push_back(a[v >> 18]);
    out.push_back(a[(v >> 12) & 63]);
    if (rest == 2) out.push_back(a[(v >> 6) & 63]);
    if (padding == Base64Padding::kWith) out.append(rest == 1 ? "==" : "=");
  }
  return out;
}

Result<std::vector<uint8_t>> Base64Decode(std::string_view text, Base64Alphabet alphabet,
                                          Base64Padding padding) {
  static const auto kStdTable = MakeDecodeTable(kB64Std);
  static const auto kUrlTable = MakeDecodeTable(kB64Url);
  const auto& table = alphabet == Base64Alphabet::kUrl ? kUrlTable : kStdTable;

  size_t pad = 0;
  if (padding == Base64Padding::kWith) {
    if (text.size() % 4 != 0) {
      return Fail(ErrorCode::kInvalidArgument, "base64: length {} is not a multiple of 4",
                  text.size());
    }
    while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
  }
  std::string_view body = text.substr(0, text.size() - pad);
  if (body.size() % 4 == 1) {
    return Fail(ErrorCode::kInvalidArgument, "base64: truncated input (length {})", text.size());
  }
  std::vector<uint8_t> out;
  out.reserve(body.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    int8_t v = table[static_cast<uint8_t>(body[i])];
    if (v < 0) {
      return Fail(ErrorCode::kInvalidArgument, "base64: invalid character at position {}", i);
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  // Leftover bits must be zero, or two different texts would decode to the same bytes.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return Fail(ErrorCode::kInvalidArgument, "base64: non-zero trailing bits");
  }
  return out;
}

}  // namespace moat
