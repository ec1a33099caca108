#include "formats/update_bundle.h"

#include <fmt/format.h>

#include "formats/byte_io.h"

namespace moat::formats {
namespace {

bool PathChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '+' || c == '~' || c == '-';
}

}  // namespace

Result<void> ValidateBundlePath(std::string_view path, size_t max_path_bytes) {
  if (path.empty() || path.size() > max_path_bytes) {
    return Fail(ErrorCode::kInvalidArgument, "bundle path of {} bytes (1..{} allowed)", path.size(),
                max_path_bytes);
  }
  std::string_view name = path;
  if (name.starts_with("targets/")) name.remove_prefix(8);
  if (name.empty() || name.front() == '.') {
    return Fail(ErrorCode::kInvalidArgument, "bundle path '{}': empty name or leading '.'",
                path.substr(0, 64));
  }
  for (char c : name) {
    if (!PathChar(c)) {
      return Fail(ErrorCode::kInvalidArgument,
                  "bundle path '{}': character 0x{:02x} is not allowed", path.substr(0, 64),
                  static_cast<unsigned char>(c));
    }
  }
  return Ok();
}

Result<std::vector<uint8_t>> SerializeUpdateBundle(
    std::string_view group_id, const std::map<std::string, std::string>& files) {
  UpdateBundleLimits limits;
  if (group_id.empty() || group_id.size() > limits.max_group_id_bytes) {
    return Fail(ErrorCode::kInvalidArgument, "bundle group ID of {} bytes (1..{} allowed)",
                group_id.size(), limits.max_group_id_bytes);
  }
  if (files.size() > limits.max_entries) {
    return Fail(ErrorCode::kLimitExceeded, "bundle of {} files (at most {})", files.size(),
                limits.max_entries);
  }
  std::vector<uint8_t> out;
  PutBytes(out, kUpdateBundleMagic);
  PutU16(out, static_cast<uint16_t>(group_id.size()));
  PutBytes(out, group_id);
  PutU32(out, static_cast<uint32_t>(files.size()));
  for (const auto& [path, data] : files) {
    MOAT_TRY(ValidateBundlePath(path, limits.max_path_bytes));
    PutU16(out, static_cast<uint16_t>(path.size()));
    PutBytes(out, path);
    PutU64(out, data.size());
    PutBytes(out, data);
  }
  return out;
}

Result<UpdateBundleView> ParseUpdateBundle(std::span<const uint8_t> bytes,
                                           const UpdateBundleLimits& limits) {
  ByteReader r(bytes, "update bundle");
  MOAT_ASSIGN_OR_RETURN(auto magic, r.ReadBytes(kUpdateBundleMagic.size(), "magic"));
  if (std::string_view(reinterpret_cast<const char*>(magic.data()), magic.size()) !=
      kUpdateBundleMagic) {
    return Fail(ErrorCode::kInvalidArgument,
                "update bundle: not a Moat update bundle (magic is not {})", kUpdateBundleMagic);
  }
  UpdateBundleView view;
  MOAT_ASSIGN_OR_RETURN(uint16_t group_len, r.ReadBigEndian<uint16_t>("group ID length"));
  if (group_len == 0 || group_len > limits.max_group_id_bytes) {
    return Fail(ErrorCode::kInvalidArgument, "update bundle: group ID of {} bytes (1..{})",
                group_len, limits.max_group_id_bytes);
  }
  MOAT_ASSIGN_OR_RETURN(auto group, r.ReadBytes(group_len, "group ID"));
  view.group_id.assign(reinterpret_cast<const char*>(group.data()), group.size());
  MOAT_ASSIGN_OR_RETURN(uint32_t count, r.ReadBigEndian<uint32_t>("entry count"));
  if (count > limits.max_entries) {
    return Fail(ErrorCode::kLimitExceeded, "update bundle: {} entries (at most {})", count,
                limits.max_entries);
  }
  for (uint32_t i = 0; i < count; ++i) {
    r.set_record("entry", i);
    MOAT_ASSIGN_OR_RETURN(uint16_t path_len, r.ReadBigEndian<uint16_t>("path length"));
    MOAT_ASSIGN_OR_RETURN(auto path_bytes, r.ReadBytes(path_len, "path"));
    std::string path(reinterpret_cast<const char*>(path_bytes.data()), path_bytes.size());
    auto valid = ValidateBundlePath(path, limits.max_path_bytes);
    if (!valid) return Fail(valid.error().WithContext(fmt::format("update bundle entry {}", i)));
    MOAT_ASSIGN_OR_RETURN(uint64_t data_len, r.ReadBigEndian<uint64_t>("data length"));
    MOAT_ASSIGN_OR_RETURN(auto data, r.ReadBytes(data_len, "data"));
    auto [it, inserted] = view.files.emplace(
        std::move(path), std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    if (!inserted) {
      return Fail(ErrorCode::kInvalidArgument, "update bundle entry {}: duplicate path '{}'", i,
                  it->first);
    }
  }
  if (r.remaining() != 0) {
    return Fail(ErrorCode::kInvalidArgument, "update bundle: {} trailing bytes after {} entries",
                r.remaining(), count);
  }
  return view;
}

}  // namespace moat::formats
