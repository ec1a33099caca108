#include "formats/image_package.h"

#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <utility>

#include <fmt/format.h>

#include "core/encoding.h"
#include "core/json.h"
#include "formats/byte_io.h"

namespace moat::formats {
namespace {

// Layout (docs/formats/image-package.md):
//   signed region: "MOATPKG\0" | u32 format_version | u32 header_len | header JSON
//                  | u32 manifest_len | manifest JSON | u64 payload_len | payload (zstd)
//   signature block: u8 version | u8 algorithm | key_id[32] | u16 sig_len | sig
//   footer: u32 signature_block_len | u32 reserved (0) | "MOATSIG\0"
// All integers big-endian.
constexpr std::string_view kMagic("MOATPKG\0", 8);
constexpr std::string_view kFooterMagic("MOATSIG\0", 8);
constexpr uint32_t kFormatVersion = 1;
constexpr uint8_t kSignatureBlockVersion = 1;
constexpr uint8_t kAlgorithmEcdsaP256 = 1;
constexpr uint8_t kAlgorithmEd25519 = 2;
constexpr size_t kFooterBytes = 16;
constexpr size_t kSignatureBlockFixedBytes = 1 + 1 + 32 + 2;
constexpr size_t kMaxSignatureBytes = 512;
constexpr size_t kEd25519SignatureBytes = 64;
constexpr size_t kMaxEcdsaP256SignatureBytes = 72;  // DER SEQUENCE of two 33-byte INTEGERs
// An empty serialized file tree: magic, version, entry count.
constexpr uint64_t kMinPayloadSize = 16;
// Domain separation: the key signs this prefix followed by SHA-256(signed region), so an
// image-signing key's signature can never be replayed as some other Moat signature.
constexpr std::string_view kSigningContext("moat image package v1\0", 22);
constexpr size_t kMaxNameBytes = 128;
constexpr uint64_t kMaxVersionComponent = 2147483647;

struct ZstdCCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

uint8_t AlgorithmCode(crypto::KeyType type) {
  return type == crypto::KeyType::kEcdsaP256 ? kAlgorithmEcdsaP256 : kAlgorithmEd25519;
}

// ---- The unsigned trailer: footer and signature block ----

struct Trailer {
  std::span<const uint8_t> signed_region;
  SignatureInfo info;
  std::span<const uint8_t> signature;
};

// Reads only the footer and the signature block; nothing in the signed region is looked at.
Result<Trailer> ParseTrailer(std::span<const uint8_t> package, const ImagePackageLimits& limits) {
  if (package.size() > limits.max_package_bytes) {
    return Fail(ErrorCode::kLimitExceeded, "image package: {} bytes exceeds the limit of {} bytes",
                package.size(), limits.max_package_bytes);
  }
  if (package.size() < kFooterBytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: {} bytes is too short (a package ends with a {}-byte footer)",
                package.size(), kFooterBytes);
  }
  auto footer = package.last(kFooterBytes);
  if (!std::equal(kFooterMagic.begin(), kFooterMagic.end(), footer.begin() + 8)) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: bad footer magic (not a Moat image package, or truncated)");
  }
  auto block_len = LoadBigEndian<uint32_t>(footer.subspan<0, 4>());
  auto reserved = LoadBigEndian<uint32_t>(footer.subspan<4, 4>());
  if (reserved != 0) {
    return Fail(ErrorCode::kInvalidArgument, "image package: footer reserved field is {}, not 0",
                reserved);
  }
  if (block_len <= kSignatureBlockFixedBytes ||
      block_len > kSignatureBlockFixedBytes + kMaxSignatureBytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: signature block length {} is out of range ({}..{})", block_len,
                kSignatureBlockFixedBytes + 1, kSignatureBlockFixedBytes + kMaxSignatureBytes);
  }
  size_t before_footer = package.size() - kFooterBytes;
  if (block_len > before_footer) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: signature block length {} overruns the package ({} bytes before "
                "the footer)",
                block_len, before_footer);
  }
  auto block = package.subspan(before_footer - block_len, block_len);
  Trailer t;
  t.signed_region = package.first(before_footer - block_len);
  if (block[0] != kSignatureBlockVersion) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: unsupported signature block version {}", block[0]);
  }
  switch (block[1]) {
    case kAlgorithmEcdsaP256:
      t.info.algorithm = crypto::KeyType::kEcdsaP256;
      break;
    case kAlgorithmEd25519:
      t.info.algorithm = crypto::KeyType::kEd25519;
      break;
    default:
      return Fail(ErrorCode::kInvalidArgument,
                  "image package: unknown signature algorithm {} (expected 1 = "
                  "ecdsa-p256-sha256 or 2 = ed25519)",
                  block[1]);
  }
  std::copy_n(block.begin() + 2, t.info.key_id.size(), t.info.key_id.begin());
  size_t sig_len = LoadBigEndian<uint16_t>(block.subspan<34, 2>());
  if (sig_len == 0 || sig_len > kMaxSignatureBytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: signature length {} is out of range (1..{})", sig_len,
                kMaxSignatureBytes);
  }
  if (kSignatureBlockFixedBytes + sig_len != block_len) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: signature length {} does not fill the signature block of {} "
                "bytes",
                sig_len, block_len);
  }
  if (t.info.algorithm == crypto::KeyType::kEd25519 && sig_len != kEd25519SignatureBytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: an ed25519 signature is {} bytes, not {}", kEd25519SignatureBytes,
                sig_len);
  }
  if (t.info.algorithm == crypto::KeyType::kEcdsaP256 && sig_len > kMaxEcdsaP256SignatureBytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: an ecdsa-p256 signature is at most {} bytes, not {}",
                kMaxEcdsaP256SignatureBytes, sig_len);
  }
  t.signature = block.subspan(kSignatureBlockFixedBytes, sig_len);
  return t;
}

std::array<uint8_t, kSigningContext.size() + 32> SigningInput(const crypto::Sha256Digest& digest) {
  std::array<uint8_t, kSigningContext.size() + 32> input{};
  std::copy(kSigningContext.begin(), kSigningContext.end(), input.begin());
  std::copy(digest.begin(), digest.end(), input.begin() + kSigningContext.size());
  return input;
}

// ---- Header JSON ----

Result<void> ValidateVersion(std::string_view version) {
  auto bad = [&] {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: header.version: '{}' is not a version (1 to 4 dot-separated "
                "decimal numbers without leading zeros, each at most {})",
                version.substr(0, 64), kMaxVersionComponent);
  };
  size_t components = 0;
  size_t start = 0;
  while (start <= version.size()) {
    size_t end = version.find('.', start);
    if (end == std::string_view::npos) end = version.size();
    std::string_view number = version.substr(start, end - start);
    if (++components > 4 || number.empty() || number.size() > 10) return bad();
    if (number.size() > 1 && number[0] == '0') return bad();
    uint64_t value = 0;
    for (char c : number) {
      if (c < '0' || c > '9') return bad();
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    if (value > kMaxVersionComponent) return bad();
    start = end + 1;
  }
  return Ok();
}

Result<void> ValidateName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: header.name: must be 1 to {} bytes, not {}", kMaxNameBytes,
                name.size());
  }
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return Fail(ErrorCode::kInvalidArgument,
                  "image package: header.name: contains control character 0x{:02x}", u);
    }
  }
  return Ok();
}

// SystemTime counts nanoseconds in an int64 (it ends in April 2262) and ParseRfc3339's
// conversion overflows past that, so the year is checked on the text first.
Result<SystemTime> ParseCreated(std::string_view text) {
  constexpr int kEarliestYear = 1970;
  constexpr int kLatestYear = 2261;
  auto out_of_range = [&] {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: header.created: '{}' is outside {}..{}", text.substr(0, 64),
                kEarliestYear, kLatestYear);
  };
  if (text.size() >= 4 &&
      std::all_of(text.begin(), text.begin() + 4, [](char c) { return c >= '0' && c <= '9'; })) {
    int year =
        (text[0] - '0') * 1000 + (text[1] - '0') * 100 + (text[2] - '0') * 10 + (text[3] - '0');
    if (year < kEarliestYear || year > kLatestYear) return out_of_range();
  }
  auto t = ParseRfc3339(text);
  if (!t) return Fail(t.error().WithContext("image package: header.created"));
  if (*t >= std::chrono::sys_days{std::chrono::year{kLatestYear + 1} / 1 / 1}) {
    return out_of_range();  // a leap second on the last day
  }
  return *t;
}

Json HeaderToJson(const ImagePackageHeader& h) {
  Json j = Json::object();
  j["format"] = kFormatVersion;
  j["image_type"] = std::string(ImageTypeName(h.image_type));
  j["component_id"] = h.component_id.ToString();
  j["image_id"] = h.image_id.ToString();
  j["version"] = h.version;
  j["name"] = h.name;
  j["payload_size"] = h.payload_size;
  j["created"] = FormatRfc3339(h.created);
  return j;
}

Result<ImagePackageHeader> ParseHeaderJson(std::string_view text,
                                           const ImagePackageLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(
      Json j, ParseJson(text, "image package: header",
                        JsonLimits{.max_bytes = limits.max_header_bytes, .max_depth = 4}));
  if (!j.is_object()) {
    return Fail(ErrorCode::kInvalidArgument, "image package: header: must be a JSON object, not {}",
                JsonTypeName(j));
  }
  static constexpr std::string_view kFields[] = {"format",       "image_type", "component_id",
                                                 "image_id",     "version",    "name",
                                                 "payload_size", "created"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kFields), std::end(kFields), key) == std::end(kFields)) {
      return Fail(ErrorCode::kInvalidArgument, "image package: header: unknown field '{}'",
                  key.substr(0, 64));
    }
  }
  for (std::string_view field : kFields) {
    if (!j.contains(field)) {
      return Fail(ErrorCode::kInvalidArgument, "image package: header: missing field '{}'", field);
    }
  }
  auto string_field = [&](std::string_view field) -> Result<std::string> {
    const Json& v = j[std::string(field)];
    if (!v.is_string()) {
      return Fail(ErrorCode::kInvalidArgument, "image package: header.{}: must be a string, not {}",
                  field, JsonTypeName(v));
    }
    return v.get<std::string>();
  };
  auto guid_field = [&](std::string_view field) -> Result<Guid> {
    MOAT_ASSIGN_OR_RETURN(std::string text_value, string_field(field));
    auto g = Guid::Parse(text_value);
    if (!g) return Fail(g.error().WithContext(fmt::format("image package: header.{}", field)));
    if (g->IsNil()) {
      return Fail(ErrorCode::kInvalidArgument, "image package: header.{}: must not be the nil GUID",
                  field);
    }
    return *g;
  };

  ImagePackageHeader h;
  const Json& format = j["format"];
  if (!format.is_number_unsigned() || format.get<uint64_t>() != kFormatVersion) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: header.format: must be {} (the package's format version), not {}",
                kFormatVersion, DumpJson(format).substr(0, 32));
  }
  MOAT_ASSIGN_OR_RETURN(std::string type, string_field("image_type"));
  if (type == "app") {
    h.image_type = ImageType::kApplication;
  } else if (type == "os") {
    h.image_type = ImageType::kOs;
  } else {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: header.image_type: '{}' is not 'app' or 'os'", type.substr(0, 32));
  }
  MOAT_ASSIGN_OR_RETURN(h.component_id, guid_field("component_id"));
  MOAT_ASSIGN_OR_RETURN(h.image_id, guid_field("image_id"));
  MOAT_ASSIGN_OR_RETURN(h.version, string_field("version"));
  MOAT_TRY(ValidateVersion(h.version));
  MOAT_ASSIGN_OR_RETURN(h.name, string_field("name"));
  MOAT_TRY(ValidateName(h.name));
  const Json& size = j["payload_size"];
  if (!size.is_number_unsigned()) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: header.payload_size: must be a non-negative integer, not {}",
                JsonTypeName(size));
  }
  h.payload_size = size.get<uint64_t>();
  // SECURITY: payload_size sizes the decompression buffer in Files(); bound it here.
  if (h.payload_size > limits.max_payload_size) {
    return Fail(ErrorCode::kLimitExceeded,
                "image package: header.payload_size: {} exceeds the limit of {} bytes",
                h.payload_size, limits.max_payload_size);
  }
  if (h.payload_size < kMinPayloadSize) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: header.payload_size: {} is smaller than an empty file tree ({} "
                "bytes)",
                h.payload_size, kMinPayloadSize);
  }
  MOAT_ASSIGN_OR_RETURN(std::string created, string_field("created"));
  MOAT_ASSIGN_OR_RETURN(h.created, ParseCreated(created));
  return h;
}

Result<void> ValidateManifest(std::string_view manifest, ImageType type,
                              const ImagePackageLimits& limits) {
  if (manifest.empty()) {
    if (type == ImageType::kApplication) {
      return Fail(ErrorCode::kInvalidArgument, "image package: an app image needs a manifest");
    }
    return Ok();
  }
  MOAT_ASSIGN_OR_RETURN(Json j, ParseJson(manifest, "image package: manifest",
                                          JsonLimits{.max_bytes = limits.max_manifest_bytes}));
  if (!j.is_object()) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: manifest: must be a JSON object, not {}", JsonTypeName(j));
  }
  return Ok();
}

// ---- Payload ----

// Cheap structural checks on the zstd frame (they read frame and block headers only).
Result<void> CheckPayloadFrame(std::span<const uint8_t> payload, uint64_t payload_size) {
  // ZSTD_MAGICNUMBER (0xFD2FB528) stored little-endian. Skippable frames are refused here.
  if (payload.size() < 4 || payload[0] != 0x28 || payload[1] != 0xB5 || payload[2] != 0x2F ||
      payload[3] != 0xFD) {
    return Fail(ErrorCode::kInvalidArgument, "image package: payload is not a zstd frame");
  }
  unsigned long long declared = ZSTD_getFrameContentSize(payload.data(), payload.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: payload has a malformed zstd frame header");
  }
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: payload zstd frame does not declare its uncompressed size");
  }
  if (declared != payload_size) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: payload zstd frame declares {} uncompressed bytes, but "
                "header.payload_size is {}",
                declared, payload_size);
  }
  size_t frame_len = ZSTD_findFrameCompressedSize(payload.data(), payload.size());
  if (ZSTD_isError(frame_len)) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: payload zstd frame is malformed or truncated ({})",
                ZSTD_getErrorName(frame_len));
  }
  if (frame_len != payload.size()) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: {} bytes of trailing data after the payload's zstd frame",
                payload.size() - frame_len);
  }
  return Ok();
}

Result<std::vector<uint8_t>> Compress(std::span<const uint8_t> input, int level) {
  std::unique_ptr<ZSTD_CCtx, ZstdCCtxDeleter> cctx(ZSTD_createCCtx());
  if (!cctx) return Fail(ErrorCode::kInternal, "image package: ZSTD_createCCtx failed");
  for (auto [param, value] :
       {std::pair{ZSTD_c_compressionLevel, level}, std::pair{ZSTD_c_contentSizeFlag, 1},
        std::pair{ZSTD_c_checksumFlag, 0}}) {
    size_t rc = ZSTD_CCtx_setParameter(cctx.get(), param, value);
    if (ZSTD_isError(rc)) {
      return Fail(ErrorCode::kInternal, "image package: ZSTD_CCtx_setParameter: {}",
                  ZSTD_getErrorName(rc));
    }
  }
  std::vector<uint8_t> out(ZSTD_compressBound(input.size()));
  size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(), input.data(), input.size());
  if (ZSTD_isError(n)) {
    return Fail(ErrorCode::kInternal, "image package: zstd compression failed: {}",
                ZSTD_getErrorName(n));
  }
  out.resize(n);
  return out;
}

// ---- The signed region ----

struct SignedContents {
  ImagePackageHeader header;
  std::string_view manifest;
  std::span<const uint8_t> payload;
};

Result<SignedContents> ParseSignedRegion(std::span<const uint8_t> region,
                                         const ImagePackageLimits& limits) {
  ByteReader in(region, "image package");
  MOAT_ASSIGN_OR_RETURN(auto magic, in.ReadBytes(kMagic.size(), "the magic"));
  if (!std::equal(kMagic.begin(), kMagic.end(), magic.begin())) {
    return Fail(ErrorCode::kInvalidArgument, "image package: bad magic (not a Moat image package)");
  }
  MOAT_ASSIGN_OR_RETURN(uint32_t version, in.ReadBigEndian<uint32_t>("the format version"));
  if (version != kFormatVersion) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: unsupported format version {} (this reader supports {})", version,
                kFormatVersion);
  }
  MOAT_ASSIGN_OR_RETURN(uint32_t header_len, in.ReadBigEndian<uint32_t>("header_len"));
  if (header_len > limits.max_header_bytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "image package: header_len {} exceeds the limit of {} bytes", header_len,
                limits.max_header_bytes);
  }
  MOAT_ASSIGN_OR_RETURN(auto header_bytes, in.ReadBytes(header_len, "the header"));
  SignedContents c;
  MOAT_ASSIGN_OR_RETURN(c.header, ParseHeaderJson(AsChars(header_bytes), limits));

  MOAT_ASSIGN_OR_RETURN(uint32_t manifest_len, in.ReadBigEndian<uint32_t>("manifest_len"));
  if (manifest_len > limits.max_manifest_bytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "image package: manifest_len {} exceeds the limit of {} bytes", manifest_len,
                limits.max_manifest_bytes);
  }
  MOAT_ASSIGN_OR_RETURN(auto manifest_bytes, in.ReadBytes(manifest_len, "the manifest"));
  c.manifest = AsChars(manifest_bytes);
  MOAT_TRY(ValidateManifest(c.manifest, c.header.image_type, limits));

  MOAT_ASSIGN_OR_RETURN(uint64_t payload_len, in.ReadBigEndian<uint64_t>("payload_len"));
  if (payload_len > in.remaining()) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: payload_len {} overruns the signed region ({} bytes remain)",
                payload_len, in.remaining());
  }
  c.payload = in.Take(static_cast<size_t>(payload_len));
  if (in.remaining() != 0) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: {} unexpected bytes between the payload and the signature block",
                in.remaining());
  }
  MOAT_TRY(CheckPayloadFrame(c.payload, c.header.payload_size));
  return c;
}

}  // namespace

std::string_view ImageTypeName(ImageType type) { return type == ImageType::kOs ? "os" : "app"; }

Result<std::vector<uint8_t>> BuildImagePackage(ImagePackageHeader header,
                                               std::string_view manifest_json,
                                               std::span<const FileTreeEntry> files,
                                               const crypto::PrivateKey& signing_key,
                                               int zstd_level) {
  const ImagePackageLimits limits;
  if (zstd_level < ZSTD_minCLevel() || zstd_level > ZSTD_maxCLevel()) {
    return Fail(ErrorCode::kInvalidArgument, "image package: zstd level {} is outside {}..{}",
                zstd_level, ZSTD_minCLevel(), ZSTD_maxCLevel());
  }
  if (manifest_json.size() > limits.max_manifest_bytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "image package: manifest of {} bytes exceeds the limit of {} bytes",
                manifest_json.size(), limits.max_manifest_bytes);
  }
  MOAT_TRY(ValidateManifest(manifest_json, header.image_type, limits));
  auto tree = SerializeFileTree(files);
  if (!tree) return Fail(tree.error().WithContext("image package"));
  header.payload_size = tree->size();
  header.created = std::chrono::floor<std::chrono::seconds>(header.created);

  // Serialize the header and read it back with the verifier's own parser, so that a package
  // this function returns is one VerifyImagePackage accepts (and no field is silently
  // changed on the way, e.g. invalid UTF-8 in the name being replaced).
  std::string header_json = DumpJson(HeaderToJson(header));
  if (header_json.size() > limits.max_header_bytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "image package: header of {} bytes exceeds the limit of {} bytes",
                header_json.size(), limits.max_header_bytes);
  }
  MOAT_ASSIGN_OR_RETURN(ImagePackageHeader reparsed, ParseHeaderJson(header_json, limits));
  if (!(reparsed == header)) {
    return Fail(ErrorCode::kInvalidArgument, "image package: header.name: not valid UTF-8");
  }

  MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> payload, Compress(*tree, zstd_level));
  tree->clear();
  tree->shrink_to_fit();

  crypto::PublicKey public_key = signing_key.public_key();
  std::vector<uint8_t> out;
  out.reserve(kMagic.size() + 4 + 4 + header_json.size() + 4 + manifest_json.size() + 8 +
              payload.size() + kSignatureBlockFixedBytes + kMaxSignatureBytes + kFooterBytes);
  PutBytes(out, kMagic);
  PutU32(out, kFormatVersion);
  PutU32(out, static_cast<uint32_t>(header_json.size()));
  PutBytes(out, header_json);
  PutU32(out, static_cast<uint32_t>(manifest_json.size()));
  PutBytes(out, manifest_json);
  PutU64(out, payload.size());
  PutBytes(out, payload);
  if (out.size() > limits.max_package_bytes) {
    return Fail(ErrorCode::kLimitExceeded, "image package: {} bytes exceeds the limit of {} bytes",
                out.size(), limits.max_package_bytes);
  }

  auto input = SigningInput(crypto::Sha256(out));
  MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> signature, signing_key.Sign(input));
  if (signature.empty() || signature.size() > kMaxSignatureBytes) {
    return Fail(ErrorCode::kInternal, "image package: signer produced a {}-byte signature",
                signature.size());
  }
  crypto::Sha256Digest key_id = public_key.Fingerprint();
  size_t block_start = out.size();
  out.push_back(kSignatureBlockVersion);
  out.push_back(AlgorithmCode(signing_key.type()));
  PutBytes(out, key_id);
  PutU16(out, static_cast<uint16_t>(signature.size()));
  PutBytes(out, signature);
  PutU32(out, static_cast<uint32_t>(out.size() - block_start));
  PutU32(out, 0);
  PutBytes(out, kFooterMagic);
  return out;
}

Result<VerifiedImagePackage> VerifyImagePackage(std::span<const uint8_t> package,
                                                std::span<const crypto::PublicKey> trusted_keys,
                                                const ImagePackageLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(Trailer trailer, ParseTrailer(package, limits));

  const crypto::PublicKey* key = nullptr;
  for (const crypto::PublicKey& candidate : trusted_keys) {
    if (candidate.Fingerprint() == trailer.info.key_id) {
      key = &candidate;
      break;
    }
  }
  if (key == nullptr) {
    return Fail(ErrorCode::kVerificationFailed, "image package: signed by unknown key {}",
                HexEncode(trailer.info.key_id));
  }
  if (key->type() != trailer.info.algorithm) {
    return Fail(ErrorCode::kVerificationFailed,
                "image package: signature algorithm {} does not match key {} ({})",
                crypto::KeyTypeName(trailer.info.algorithm), HexEncode(trailer.info.key_id),
                crypto::KeyTypeName(key->type()));
  }

  // SECURITY: the signed region is hashed exactly once, in place (no copy), and everything
  // below reads only from that same, now verified, memory.
  crypto::Sha256Digest digest = crypto::Sha256(trailer.signed_region);
  auto input = SigningInput(digest);
  if (auto ok = key->Verify(input, trailer.signature); !ok) {
    return Fail(ErrorCode::kVerificationFailed,
                "image package: signature does not match (the package was modified or signed "
                "by another key)");
  }

  MOAT_ASSIGN_OR_RETURN(SignedContents contents, ParseSignedRegion(trailer.signed_region, limits));
  VerifiedImagePackage verified;
  verified.header_ = std::move(contents.header);
  verified.manifest_json_ = contents.manifest;
  verified.payload_ = contents.payload;
  verified.signature_ = trailer.info;
  verified.signed_region_sha256_ = digest;
  return verified;
}

Result<std::vector<FileTreeEntry>> VerifiedImagePackage::Files(const FileTreeLimits& limits) const {
  MOAT_TRY(CheckPayloadFrame(payload_, header_.payload_size));
  if (header_.payload_size > std::numeric_limits<size_t>::max()) {
    return Fail(ErrorCode::kLimitExceeded,
                "image package: header.payload_size {} does not fit in memory",
                header_.payload_size);
  }
  std::unique_ptr<ZSTD_DCtx, ZstdDCtxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return Fail(ErrorCode::kInternal, "image package: ZSTD_createDCtx failed");
  // SECURITY: one-shot decompression into a buffer of exactly payload_size bytes. zstd
  // refuses to write past the buffer (dstSize_tooSmall) and checks the frame's declared
  // content size, so a payload that lies about its size cannot make us allocate or write
  // more than the (already limited) header value. One shot also needs no window buffer.
  std::vector<uint8_t> tree(static_cast<size_t>(header_.payload_size));
  size_t n =
      ZSTD_decompressDCtx(dctx.get(), tree.data(), tree.size(), payload_.data(), payload_.size());
  if (ZSTD_isError(n)) {
    return Fail(ErrorCode::kInvalidArgument, "image package: payload decompression failed: {}",
                ZSTD_getErrorName(n));
  }
  if (n != tree.size()) {
    return Fail(ErrorCode::kInvalidArgument,
                "image package: payload decompressed to {} bytes, but header.payload_size is {}", n,
                tree.size());
  }
  auto files = ParseFileTree(tree, limits);
  if (!files) return Fail(files.error().WithContext("image package"));
  return files;
}

Result<UnverifiedImagePackageInfo> InspectUnverifiedImagePackage(std::span<const uint8_t> package,
                                                                 const ImagePackageLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(Trailer trailer, ParseTrailer(package, limits));
  MOAT_ASSIGN_OR_RETURN(SignedContents contents, ParseSignedRegion(trailer.signed_region, limits));
  UnverifiedImagePackageInfo info;
  info.header = std::move(contents.header);
  info.manifest_json = std::string(contents.manifest);
  info.signature = trailer.info;
  info.payload_bytes = contents.payload.size();
  return info;
}

}  // namespace moat::formats
