// The signed image package: one file holding an app or OS image — a small JSON header, the
// app manifest, a zstd-compressed file tree, and a signature over all of it by an
// image-signing key. Byte layout: docs/formats/image-package.md.
//
// Verify first, then parse (RAUC's rule): VerifyImagePackage reads only the fixed footer and
// the signature block before checking the signature over the signed region; the header,
// manifest and payload bounds are parsed afterwards and only from the verified bytes. The
// one way to read a package without a signature check is InspectUnverifiedImagePackage,
// named so that nobody mistakes it for a check.
//
// This layer does not interpret the manifest (the CLI and the installer parse it as an app
// manifest); it only requires a strict JSON object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "formats/file_tree.h"
#include "formats/guid.h"

namespace moat::formats {

enum class ImageType { kApplication, kOs };  // "app" / "os" in the header

// "app" or "os".
std::string_view ImageTypeName(ImageType type);

struct ImagePackageHeader {
  ImageType image_type = ImageType::kApplication;
  Guid component_id;  // never nil
  Guid image_id;      // never nil
  // 1 to 4 dot-separated decimal numbers without leading zeros, each <= 2147483647.
  std::string version;
  // 1..128 bytes of UTF-8 without control characters.
  std::string name;
  // Size of the serialized (uncompressed) file tree. BuildImagePackage fills it in.
  uint64_t payload_size = 0;
  // Stored with one-second precision (RFC 3339, UTC).
  SystemTime created;

  bool operator==(const ImagePackageHeader&) const = default;
};

struct ImagePackageLimits {
  size_t max_package_bytes = 512u << 20;
  size_t max_header_bytes = 16 << 10;
  size_t max_manifest_bytes = 64 << 10;
  // Bound on the header's payload_size, i.e. on the memory Files() allocates to decompress.
  uint64_t max_payload_size = 1ull << 30;
  FileTreeLimits tree;
};

// Builds and signs a package. The header's payload_size is filled in and `created` is
// truncated to whole seconds. The manifest must be a JSON object (non-empty for app images;
// an OS image may have an empty manifest). `files` may be in any order; they are stored in
// canonical order. zstd_level must be within zstd's supported range.
Result<std::vector<uint8_t>> BuildImagePackage(ImagePackageHeader header,
                                               std::string_view manifest_json,
                                               std::span<const FileTreeEntry> files,
                                               const crypto::PrivateKey& signing_key,
                                               int zstd_level = 3);

struct SignatureInfo {
  crypto::KeyType algorithm = crypto::KeyType::kEcdsaP256;
  crypto::Sha256Digest key_id{};  // SHA-256 of the signer's SubjectPublicKeyInfo DER

  bool operator==(const SignatureInfo&) const = default;
};

// A package whose signature has been checked against a trusted key. Only VerifyImagePackage
// creates one.
//
// Ownership: it holds spans into the buffer passed to VerifyImagePackage (the manifest and
// the compressed payload are not copied, so a 500 MiB image is verified without a second
// copy). That buffer must outlive this object and must not be modified while it is alive;
// modifying it would defeat the verification. Copyable; immutable; safe to share between
// threads.
class VerifiedImagePackage {
 public:
  const ImagePackageHeader& header() const { return header_; }
  // The manifest JSON exactly as signed (a strict JSON object, or empty for an OS image).
  std::string_view manifest_json() const { return manifest_json_; }
  const SignatureInfo& signature() const { return signature_; }
  // SHA-256 of the signed region (magic through payload) — the digest the signature covers.
  // It identifies the image's content and does not change if the same content is re-signed;
  // it is NOT the SHA-256 of the package file, which also includes the signature block.
  crypto::Sha256Digest package_sha256() const { return signed_region_sha256_; }
  // The compressed payload (a span into the caller's buffer).
  std::span<const uint8_t> compressed_payload() const { return payload_; }

  // Decompresses the payload (output bounded by header().payload_size, which
  // VerifyImagePackage already checked against its limits) and parses the file tree.
  Result<std::vector<FileTreeEntry>> Files(const FileTreeLimits& limits = {}) const;

 private:
  friend Result<VerifiedImagePackage> VerifyImagePackage(std::span<const uint8_t>,
                                                         std::span<const crypto::PublicKey>,
                                                         const ImagePackageLimits&);
  VerifiedImagePackage() = default;

  ImagePackageHeader header_;
  std::string_view manifest_json_;
  std::span<const uint8_t> payload_;
  SignatureInfo signature_;
  crypto::Sha256Digest signed_region_sha256_{};
};

// Verify first: locates the footer and the signature block, checks the key id against
// `trusted_keys` (no match: kVerificationFailed "image package: signed by unknown key <hex>"),
// hashes the signed region once and verifies the signature (mismatch: kVerificationFailed
// "image package: signature does not match (the package was modified or signed by another
// key)"), and only then parses the header, manifest and payload bounds from the verified
// bytes. Malformed input gives kInvalidArgument (or kLimitExceeded for a limit) naming the
// field. `package` must outlive the result (see VerifiedImagePackage).
Result<VerifiedImagePackage> VerifyImagePackage(std::span<const uint8_t> package,
                                                std::span<const crypto::PublicKey> trusted_keys,
                                                const ImagePackageLimits& limits = {});

// For display only (`moat image-package show` without --trust): parses WITHOUT verifying
// the signature. Nothing read here may be used to decide anything. Holds copies; does not
// refer to `package` afterwards.
struct UnverifiedImagePackageInfo {
  ImagePackageHeader header;
  std::string manifest_json;
  SignatureInfo signature;
  uint64_t payload_bytes = 0;  // compressed payload length
};
Result<UnverifiedImagePackageInfo> InspectUnverifiedImagePackage(
    std::span<const uint8_t> package, const ImagePackageLimits& limits = {});

}  // namespace moat::formats
