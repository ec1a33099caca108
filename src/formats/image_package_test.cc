#include "formats/image_package.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"

namespace moat::formats {
namespace {

using Kind = FileTreeEntry::Kind;
using namespace std::chrono_literals;

constexpr char kComponentId[] = "a60a27ff-8936-4a49-b73f-70861db03d43";
constexpr char kImageId[] = "db81a79a-7ec4-435d-9cac-b2bfe2f2e38b";
constexpr char kManifest[] =
    R"({"SchemaVersion":1,"Name":"blink","ComponentId":"a60a27ff-8936-4a49-b73f-70861db03d43",)"
    R"("EntryPoint":"/bin/app","CmdArgs":[],"Capabilities":{"Gpio":[8]},)"
    R"("ApplicationType":"Default"})";

const crypto::PrivateKey& P256Key() {
  static const crypto::PrivateKey key = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  return key;
}
const crypto::PrivateKey& Ed25519Key() {
  static const crypto::PrivateKey key = *crypto::PrivateKey::Generate(crypto::KeyType::kEd25519);
  return key;
}

ImagePackageHeader SampleHeader() {
  ImagePackageHeader h;
  h.image_type = ImageType::kApplication;
  h.component_id = *Guid::Parse(kComponentId);
  h.image_id = *Guid::Parse(kImageId);
  h.version = "1.2.3";
  h.name = "blink";
  h.created = *ParseRfc3339("2026-11-27T19:46:27Z") + 500ms;  // sub-second part is dropped
  return h;
}

std::vector<FileTreeEntry> SampleFiles() {
  auto bytes = [](std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); };
  return {
      {.kind = Kind::kFile,
       .path = "bin/app",
       .mode = 0755,
       .data = bytes("\x7f"
                     "ELF app")},
      {.kind = Kind::kDirectory, .path = "bin", .mode = 0755},
      {.kind = Kind::kSymlink, .path = "bin/app.link", .mode = 0777, .link_target = "app"},
      {.kind = Kind::kFile, .path = "README", .mode = 0644, .data = bytes("hello\n")},
  };
}

std::vector<FileTreeEntry> Sorted(std::vector<FileTreeEntry> entries) {
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  return entries;
}

std::vector<uint8_t> BuildSample(const crypto::PrivateKey& key) {
  auto files = SampleFiles();
  auto p = BuildImagePackage(SampleHeader(), kManifest, files, key);
  EXPECT_TRUE(p) << p.error().message();
  return p ? *p : std::vector<uint8_t>{};
}

uint64_t LoadBigEndian(std::span<const uint8_t> b, size_t offset, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v = (v << 8) | b[offset + i];
  return v;
}
void StoreBigEndian(std::vector<uint8_t>& b, size_t offset, size_t width, uint64_t v) {
  for (size_t i = 0; i < width; ++i) b[offset + width - 1 - i] = static_cast<uint8_t>(v >> (8 * i));
}

// Offsets of the regions of a well-formed package, read as docs/formats/image-package.md
// describes them.
struct Layout {
  size_t header_offset, header_len, manifest_offset, manifest_len, payload_offset, payload_len;
  size_t signed_len, block_offset, block_len, sig_len;
};
Layout Locate(std::span<const uint8_t> p) {
  Layout l{};
  l.header_len = LoadBigEndian(p, 12, 4);
  l.header_offset = 16;
  l.manifest_len = LoadBigEndian(p, l.header_offset + l.header_len, 4);
  l.manifest_offset = l.header_offset + l.header_len + 4;
  l.payload_len = LoadBigEndian(p, l.manifest_offset + l.manifest_len, 8);
  l.payload_offset = l.manifest_offset + l.manifest_len + 8;
  l.signed_len = l.payload_offset + l.payload_len;
  l.block_len = LoadBigEndian(p, p.size() - 16, 4);
  l.block_offset = p.size() - 16 - l.block_len;
  l.sig_len = LoadBigEndian(p, l.block_offset + 34, 2);
  return l;
}

// ---- An independent writer, from the documentation, for packages Build refuses to make ----

Json SampleHeaderJson() {
  return Json{{"format", 1},
              {"image_type", "app"},
              {"component_id", kComponentId},
              {"image_id", kImageId},
              {"version", "1.2.3"},
              {"name", "blink"},
              {"payload_size", 0},
              {"created", "2026-11-27T19:46:27Z"}};
}

std::vector<uint8_t> Zstd(std::span<const uint8_t> data, bool with_content_size = true) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, with_content_size ? 1 : 0);
  std::vector<uint8_t> out(ZSTD_compressBound(data.size()));
  size_t n = ZSTD_compress2(cctx, out.data(), out.size(), data.data(), data.size());
  ZSTD_freeCCtx(cctx);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::vector<uint8_t> SampleTree() { return *SerializeFileTree(SampleFiles()); }

struct RawParts {
  std::string magic = std::string("MOATPKG\0", 8);
  uint32_t format_version = 1;
  std::string header_json;
  std::optional<uint32_t> header_len;  // overrides header_json.size()
  std::string manifest = kManifest;
  std::vector<uint8_t> payload;
  std::optional<uint64_t> payload_len;  // overrides payload.size()
  std::string after_payload;
};

// A payload of the sample tree, with the header's payload_size set to match.
RawParts SampleParts() {
  RawParts parts;
  auto tree = SampleTree();
  parts.payload = Zstd(tree);
  Json h = SampleHeaderJson();
  h["payload_size"] = tree.size();
  parts.header_json = DumpJson(h);
  return parts;
}

std::vector<uint8_t> SignedRegion(const RawParts& parts) {
  std::vector<uint8_t> out(parts.magic.begin(), parts.magic.end());
  auto put = [&](uint64_t v, size_t width) {
    out.resize(out.size() + width);
    StoreBigEndian(out, out.size() - width, width, v);
  };
  put(parts.format_version, 4);
  put(parts.header_len.value_or(static_cast<uint32_t>(parts.header_json.size())), 4);
  out.insert(out.end(), parts.header_json.begin(), parts.header_json.end());
  put(parts.manifest.size(), 4);
  out.insert(out.end(), parts.manifest.begin(), parts.manifest.end());
  put(parts.payload_len.value_or(parts.payload.size()), 8);
  out.insert(out.end(), parts.payload.begin(), parts.payload.end());
  out.insert(out.end(), parts.after_payload.begin(), parts.after_payload.end());
  return out;
}

// Appends a valid signature block and footer over `region`.
std::vector<uint8_t> Sign(std::vector<uint8_t> region, const crypto::PrivateKey& key) {
  crypto::Sha256Digest digest = crypto::Sha256(region);
  std::string input("moat image package v1\0", 22);
  input.append(digest.begin(), digest.end());
  auto sig = *key.Sign(input);
  std::vector<uint8_t> out = std::move(region);
  out.push_back(1);
  out.push_back(key.type() == crypto::KeyType::kEcdsaP256 ? 1 : 2);
  auto key_id = key.public_key().Fingerprint();
  out.insert(out.end(), key_id.begin(), key_id.end());
  out.push_back(static_cast<uint8_t>(sig.size() >> 8));
  out.push_back(static_cast<uint8_t>(sig.size()));
  out.insert(out.end(), sig.begin(), sig.end());
  size_t block_len = 36 + sig.size();
  out.resize(out.size() + 8);
  StoreBigEndian(out, out.size() - 8, 4, block_len);
  StoreBigEndian(out, out.size() - 4, 4, 0);
  std::string magic("MOATSIG\0", 8);
  out.insert(out.end(), magic.begin(), magic.end());
  return out;
}

std::vector<uint8_t> SignParts(const RawParts& parts) {
  return Sign(SignedRegion(parts), P256Key());
}

Result<VerifiedImagePackage> VerifyWithP256(std::span<const uint8_t> package,
                                            const ImagePackageLimits& limits = {}) {
  std::vector<crypto::PublicKey> trusted = {P256Key().public_key()};
  return VerifyImagePackage(package, trusted, limits);
}

std::string VerifyError(std::span<const uint8_t> package, const ImagePackageLimits& limits = {}) {
  auto r = VerifyWithP256(package, limits);
  if (r) return "(no error)";
  return r.error().message();
}

// ---- Round trips ----

void ExpectRoundTrip(const crypto::PrivateKey& key, const crypto::PublicKey& verify_key) {
  auto files = SampleFiles();
  auto package = BuildImagePackage(SampleHeader(), kManifest, files, key);
  ASSERT_TRUE(package) << package.error().message();

  std::vector<crypto::PublicKey> trusted = {verify_key};
  auto verified = VerifyImagePackage(*package, trusted);
  ASSERT_TRUE(verified) << verified.error().message();

  ImagePackageHeader expected = SampleHeader();
  expected.created = *ParseRfc3339("2026-11-27T19:46:27Z");
  expected.payload_size = SerializeFileTree(files)->size();
  EXPECT_EQ(verified->header(), expected);
  EXPECT_EQ(verified->manifest_json(), kManifest);
  EXPECT_EQ(verified->signature().algorithm, key.type());
  EXPECT_EQ(verified->signature().key_id, verify_key.Fingerprint());

  Layout l = Locate(*package);
  EXPECT_EQ(verified->package_sha256(),
            crypto::Sha256(std::span<const uint8_t>(*package).first(l.signed_len)));
  EXPECT_EQ(verified->compressed_payload().size(), l.payload_len);
  // The verified view points into the caller's buffer rather than copying the payload.
  EXPECT_EQ(verified->compressed_payload().data(), package->data() + l.payload_offset);

  auto tree = verified->Files();
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_EQ(*tree, Sorted(files));
}

TEST(ImagePackageTest, RoundTripWithP256) { ExpectRoundTrip(P256Key(), P256Key().public_key()); }

TEST(ImagePackageTest, RoundTripWithEd25519) {
  ExpectRoundTrip(Ed25519Key(), Ed25519Key().public_key());
}

// The test PKI is made by tests/pki/make-test-pki.sh (the ctest fixture runs it; outside
// ctest run `bash tests/pki/make-test-pki.sh build-package/test-pki` first). Its public keys
// were written by the openssl command line, so the key ids are checked against an
// independent encoder of SubjectPublicKeyInfo.
TEST(ImagePackageTest, RoundTripWithTestPkiKeys) {
  const std::string dir = std::string(MOAT_BINARY_DIR) + "/test-pki/";
  for (const char* name : {"signer-p256", "signer-ed25519"}) {
    SCOPED_TRACE(name);
    auto key_pem = ReadFile(dir + name + ".key", 16384);
    ASSERT_TRUE(key_pem) << key_pem.error().message()
                         << " (run tests/pki/make-test-pki.sh into the build directory)";
    auto pub_pem = ReadFile(dir + name + ".pub", 16384);
    ASSERT_TRUE(pub_pem) << pub_pem.error().message();
    auto key = crypto::PrivateKey::FromPem(*key_pem);
    ASSERT_TRUE(key) << key.error().message();
    auto pub = crypto::PublicKey::FromPem(*pub_pem);
    ASSERT_TRUE(pub) << pub.error().message();
    ExpectRoundTrip(*key, *pub);
  }
}

TEST(ImagePackageTest, OsImageMayHaveAnEmptyManifest) {
  ImagePackageHeader h = SampleHeader();
  h.image_type = ImageType::kOs;
  auto files = SampleFiles();
  auto package = BuildImagePackage(h, "", files, P256Key());
  ASSERT_TRUE(package) << package.error().message();
  auto verified = VerifyWithP256(*package);
  ASSERT_TRUE(verified) << verified.error().message();
  EXPECT_EQ(verified->header().image_type, ImageType::kOs);
  EXPECT_EQ(verified->manifest_json(), "");

  h.image_type = ImageType::kApplication;
  auto app = BuildImagePackage(h, "", files, P256Key());
  ASSERT_FALSE(app);
  EXPECT_EQ(app.error().message(), "image package: an app image needs a manifest");
}

TEST(ImagePackageTest, PicksTheSigningKeyAmongSeveralTrusted) {
  auto package = BuildSample(Ed25519Key());
  auto other = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  std::vector<crypto::PublicKey> trusted = {other.public_key(), P256Key().public_key(),
                                            Ed25519Key().public_key()};
  auto verified = VerifyImagePackage(package, trusted);
  ASSERT_TRUE(verified) << verified.error().message();
  EXPECT_EQ(verified->signature().key_id, Ed25519Key().public_key().Fingerprint());
}

// ---- Tampering ----

TEST(ImagePackageTest, UntrustedKeyIsRefused) {
  auto package = BuildSample(P256Key());
  std::vector<crypto::PublicKey> trusted = {Ed25519Key().public_key()};
  auto r = VerifyImagePackage(package, trusted);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(r.error().message(),
            "image package: signed by unknown key " + P256Key().public_key().FingerprintHex());
  auto none = VerifyImagePackage(package, {});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kVerificationFailed);
}

TEST(ImagePackageTest, AnyChangeToTheSignedRegionBreaksTheSignature) {
  for (const crypto::PrivateKey* key : {&P256Key(), &Ed25519Key()}) {
    auto package = BuildSample(*key);
    Layout l = Locate(package);
    std::vector<crypto::PublicKey> trusted = {key->public_key()};
    for (size_t i = 0; i < l.signed_len; ++i) {
      auto tampered = package;
      tampered[i] ^= 0x01;
      auto r = VerifyImagePackage(tampered, trusted);
      ASSERT_FALSE(r) << "byte " << i;
      EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed) << "byte " << i;
      EXPECT_EQ(r.error().message(),
                "image package: signature does not match (the package was modified or signed "
                "by another key)")
          << "byte " << i;
    }
  }
}

TEST(ImagePackageTest, FlippingAnyByteAnywhereFailsCleanly) {
  for (const crypto::PrivateKey* key : {&P256Key(), &Ed25519Key()}) {
    auto package = BuildSample(*key);
    std::vector<crypto::PublicKey> trusted = {key->public_key()};
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      for (size_t i = 0; i < package.size(); ++i) {
        auto tampered = package;
        tampered[i] ^= mask;
        auto r = VerifyImagePackage(tampered, trusted);
        ASSERT_FALSE(r) << "byte " << i << " mask " << int{mask};
        EXPECT_TRUE(r.error().code() == ErrorCode::kVerificationFailed ||
                    r.error().code() == ErrorCode::kInvalidArgument)
            << r.error().message();
        // Inspecting it must not crash either (it may succeed: it checks nothing).
        (void)InspectUnverifiedImagePackage(tampered);
      }
    }
  }
}

TEST(ImagePackageTest, PayloadByteFlipGivesSignatureMismatch) {
  auto package = BuildSample(P256Key());
  Layout l = Locate(package);
  package[l.payload_offset + l.payload_len / 2] ^= 0x20;
  EXPECT_EQ(VerifyError(package),
            "image package: signature does not match (the package was modified or signed by "
            "another key)");
}

TEST(ImagePackageTest, EveryTruncationFails) {
  auto package = BuildSample(Ed25519Key());
  std::vector<crypto::PublicKey> trusted = {Ed25519Key().public_key()};
  for (size_t n = 0; n < package.size(); ++n) {
    auto prefix = std::span<const uint8_t>(package).first(n);
    ASSERT_FALSE(VerifyImagePackage(prefix, trusted)) << n;
    ASSERT_FALSE(InspectUnverifiedImagePackage(prefix)) << n;
  }
  auto r = VerifyImagePackage(std::span<const uint8_t>(package).first(10), trusted);
  EXPECT_EQ(r.error().message(),
            "image package: 10 bytes is too short (a package ends with a 16-byte footer)");
  r = VerifyImagePackage(std::span<const uint8_t>(package).first(package.size() - 1), trusted);
  EXPECT_EQ(r.error().message(),
            "image package: bad footer magic (not a Moat image package, or truncated)");
}

// ---- The unsigned trailer ----

TEST(ImagePackageTest, MalformedTrailerErrors) {
  const auto package = BuildSample(P256Key());
  const Layout l = Locate(package);
  auto with = [&](std::function<void(std::vector<uint8_t>&)> edit) {
    auto p = package;
    edit(p);
    return VerifyError(p);
  };
  const size_t footer = package.size() - 16;
  EXPECT_EQ(with([&](auto& p) { p[footer + 15] = 'X'; }),
            "image package: bad footer magic (not a Moat image package, or truncated)");
  EXPECT_EQ(with([&](auto& p) { p[footer + 7] = 5; }),
            "image package: footer reserved field is 5, not 0");
  EXPECT_EQ(with([&](auto& p) { StoreBigEndian(p, footer, 4, 36); }),
            "image package: signature block length 36 is out of range (37..548)");
  EXPECT_EQ(with([&](auto& p) { StoreBigEndian(p, footer, 4, 549); }),
            "image package: signature block length 549 is out of range (37..548)");
  EXPECT_EQ(with([&](auto& p) { StoreBigEndian(p, footer, 4, 0xffffffff); }),
            "image package: signature block length 4294967295 is out of range (37..548)");
  EXPECT_EQ(with([&](auto& p) { p[l.block_offset] = 2; }),
            "image package: unsupported signature block version 2");
  EXPECT_EQ(with([&](auto& p) { p[l.block_offset + 1] = 7; }),
            "image package: unknown signature algorithm 7 (expected 1 = ecdsa-p256-sha256 or 2 "
            "= ed25519)");
  EXPECT_EQ(with([&](auto& p) { p[l.block_offset + 1] = 2; }),
            fmt::format("image package: an ed25519 signature is 64 bytes, not {}", l.sig_len));
  EXPECT_EQ(with([&](auto& p) { StoreBigEndian(p, l.block_offset + 34, 2, 0); }),
            "image package: signature length 0 is out of range (1..512)");
  EXPECT_EQ(with([&](auto& p) { StoreBigEndian(p, l.block_offset + 34, 2, 513); }),
            "image package: signature length 513 is out of range (1..512)");
  EXPECT_EQ(with([&](auto& p) { StoreBigEndian(p, l.block_offset + 34, 2, l.sig_len - 1); }),
            fmt::format("image package: signature length {} does not fill the signature block "
                        "of {} bytes",
                        l.sig_len - 1, l.block_len));
  std::string flipped_id;
  std::string flipped_error = with([&](auto& p) {
    p[l.block_offset + 2] ^= 0xff;
    flipped_id = HexEncode(std::span<const uint8_t>(p).subspan(l.block_offset + 2, 32));
  });
  EXPECT_EQ(flipped_error, "image package: signed by unknown key " + flipped_id);

  // A footer claiming a block longer than everything before it.
  std::vector<uint8_t> tiny(50, 0);
  tiny.resize(66);
  StoreBigEndian(tiny, 50, 4, 100);
  std::string magic("MOATSIG\0", 8);
  std::copy(magic.begin(), magic.end(), tiny.begin() + 58);
  EXPECT_EQ(VerifyError(tiny),
            "image package: signature block length 100 overruns the package (50 bytes before "
            "the footer)");
}

TEST(ImagePackageTest, AlgorithmMustMatchTheKey) {
  auto package = BuildSample(Ed25519Key());
  Layout l = Locate(package);
  package[l.block_offset + 1] = 1;  // claims ECDSA; the 64-byte signature length still fits
  std::vector<crypto::PublicKey> trusted = {Ed25519Key().public_key()};
  auto r = VerifyImagePackage(package, trusted);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(r.error().message(),
            "image package: signature algorithm ecdsa-p256 does not match key " +
                Ed25519Key().public_key().FingerprintHex() + " (ed25519)");
}

TEST(ImagePackageTest, PackageSizeLimit) {
  auto package = BuildSample(P256Key());
  auto r = VerifyWithP256(package, ImagePackageLimits{.max_package_bytes = 100});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(r.error().message(),
            fmt::format("image package: {} bytes exceeds the limit of 100 bytes", package.size()));
}

// ---- The signed region: validly signed, but malformed ----

TEST(ImagePackageTest, IndependentWriterMatchesTheDocumentedLayout) {
  auto verified = VerifyWithP256(SignParts(SampleParts()));
  ASSERT_TRUE(verified) << verified.error().message();
  auto files = verified->Files();
  ASSERT_TRUE(files) << files.error().message();
  EXPECT_EQ(*files, Sorted(SampleFiles()));
}

TEST(ImagePackageTest, MalformedSignedRegionErrors) {
  auto error_for = [](std::function<void(RawParts&)> edit, const ImagePackageLimits& limits = {}) {
    RawParts parts = SampleParts();
    edit(parts);
    return VerifyError(SignParts(parts), limits);
  };
  EXPECT_EQ(error_for([](RawParts& p) { p.magic[0] = 'X'; }),
            "image package: bad magic (not a Moat image package)");
  EXPECT_EQ(error_for([](RawParts& p) { p.format_version = 2; }),
            "image package: unsupported format version 2 (this reader supports 1)");
  EXPECT_EQ(error_for([](RawParts& p) { p.header_len = 16385; }),
            "image package: header_len 16385 exceeds the limit of 16384 bytes");
  EXPECT_EQ(error_for([](RawParts& p) { p.header_len = 100; },
                      ImagePackageLimits{.max_header_bytes = 99}),
            "image package: header_len 100 exceeds the limit of 99 bytes");
  {
    RawParts parts = SampleParts();
    parts.header_len = 16000;
    auto region = SignedRegion(parts);
    EXPECT_EQ(VerifyError(Sign(region, P256Key())),
              fmt::format("image package: truncated reading the header (16000 bytes needed at "
                          "offset 16, {} remain)",
                          region.size() - 16));
  }
  EXPECT_EQ(error_for([](RawParts& p) { p.manifest = "[1,2]"; }),
            "image package: manifest: must be a JSON object, not array");
  EXPECT_EQ(error_for([](RawParts& p) { p.manifest = ""; }),
            "image package: an app image needs a manifest");
  EXPECT_EQ(error_for([](RawParts& p) { p.manifest = std::string(70000, ' '); }),
            "image package: manifest_len 70000 exceeds the limit of 65536 bytes");
  EXPECT_TRUE(error_for([](RawParts& p) {
                p.manifest = "{\"a\":";
              }).starts_with("image package: manifest: invalid JSON: "));
}

TEST(ImagePackageTest, PayloadBoundsErrors) {
  RawParts parts = SampleParts();
  parts.payload_len = parts.payload.size() + 1;
  EXPECT_EQ(VerifyError(SignParts(parts)),
            fmt::format("image package: payload_len {} overruns the signed region ({} bytes "
                        "remain)",
                        parts.payload.size() + 1, parts.payload.size()));
  parts = SampleParts();
  parts.after_payload = "abc";
  EXPECT_EQ(VerifyError(SignParts(parts)),
            "image package: 3 unexpected bytes between the payload and the signature block");
}

TEST(ImagePackageTest, HeaderJsonErrors) {
  auto error_for = [](std::function<void(Json&)> edit) {
    RawParts parts = SampleParts();
    Json h = *ParseJson(parts.header_json, "test");
    edit(h);
    parts.header_json = DumpJson(h);
    return VerifyError(SignParts(parts));
  };
  EXPECT_EQ(error_for([](Json& h) { h["payload_sha256"] = "00"; }),
            "image package: header: unknown field 'payload_sha256'");
  EXPECT_EQ(error_for([](Json& h) { h.erase("created"); }),
            "image package: header: missing field 'created'");
  EXPECT_EQ(error_for([](Json& h) { h["format"] = 2; }),
            "image package: header.format: must be 1 (the package's format version), not 2");
  EXPECT_EQ(error_for([](Json& h) { h["format"] = "1"; }),
            "image package: header.format: must be 1 (the package's format version), not \"1\"");
  EXPECT_EQ(error_for([](Json& h) { h["image_type"] = "lib"; }),
            "image package: header.image_type: 'lib' is not 'app' or 'os'");
  EXPECT_EQ(error_for([](Json& h) { h["image_type"] = 1; }),
            "image package: header.image_type: must be a string, not integer");
  EXPECT_EQ(error_for([](Json& h) { h["component_id"] = "00000000-0000-0000-0000-000000000000"; }),
            "image package: header.component_id: must not be the nil GUID");
  EXPECT_EQ(error_for([](Json& h) { h["image_id"] = "xyz"; }),
            "image package: header.image_id: 'xyz' is not a GUID (expected 36 characters like "
            "01234567-89ab-cdef-0123-456789abcdef)");
  for (const char* bad :
       {"1.02", "1.2.3.4.5", "", "1..2", "1.2.", "v1", "2147483648", "-1", "12345678901"}) {
    EXPECT_EQ(error_for([&](Json& h) { h["version"] = bad; }),
              fmt::format("image package: header.version: '{}' is not a version (1 to 4 "
                          "dot-separated decimal numbers without leading zeros, each at most "
                          "2147483647)",
                          bad));
  }
  EXPECT_EQ(error_for([](Json& h) { h["name"] = ""; }),
            "image package: header.name: must be 1 to 128 bytes, not 0");
  EXPECT_EQ(error_for([](Json& h) { h["name"] = "a\tb"; }),
            "image package: header.name: contains control character 0x09");
  EXPECT_EQ(error_for([](Json& h) { h["payload_size"] = "12"; }),
            "image package: header.payload_size: must be a non-negative integer, not string");
  EXPECT_EQ(error_for([](Json& h) { h["payload_size"] = -1; }),
            "image package: header.payload_size: must be a non-negative integer, not integer");
  EXPECT_EQ(error_for([](Json& h) { h["payload_size"] = 3; }),
            "image package: header.payload_size: 3 is smaller than an empty file tree (16 bytes)");
  EXPECT_EQ(error_for([](Json& h) { h["created"] = "yesterday"; }),
            "image package: header.created: time 'yesterday' is not RFC 3339 UTC (expected "
            "YYYY-MM-DDTHH:MM:SSZ)");
  EXPECT_EQ(error_for([](Json& h) { h["created"] = "9999-01-01T00:00:00Z"; }),
            "image package: header.created: '9999-01-01T00:00:00Z' is outside 1970..2261");
  EXPECT_EQ(error_for([](Json& h) { h["created"] = "1969-01-01T00:00:00Z"; }),
            "image package: header.created: '1969-01-01T00:00:00Z' is outside 1970..2261");
  EXPECT_EQ(error_for([](Json& h) { h = Json::array({1}); }),
            "image package: header: must be a JSON object, not array");

  RawParts parts = SampleParts();
  parts.header_json.insert(1, "\"name\":\"x\",");
  EXPECT_EQ(VerifyError(SignParts(parts)),
            "image package: header: invalid JSON: duplicate key 'name'");
}

TEST(ImagePackageTest, DecompressionBombsAreRefused) {
  std::vector<uint8_t> zeros(10 << 20, 0);
  RawParts parts = SampleParts();
  parts.payload = Zstd(zeros);  // ~1 KiB that inflates to 10 MiB
  Json h = *ParseJson(parts.header_json, "test");
  h["payload_size"] = 100;  // the header lies
  parts.header_json = DumpJson(h);
  EXPECT_EQ(VerifyError(SignParts(parts)),
            "image package: payload zstd frame declares 10485760 uncompressed bytes, but "
            "header.payload_size is 100");

  // Honest header, but more than the limit allows.
  h["payload_size"] = zeros.size();
  parts.header_json = DumpJson(h);
  auto r = VerifyWithP256(SignParts(parts), ImagePackageLimits{.max_payload_size = 1 << 20});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(r.error().message(),
            "image package: header.payload_size: 10485760 exceeds the limit of 1048576 bytes");

  h["payload_size"] = 1ull << 40;
  parts.header_json = DumpJson(h);
  r = VerifyWithP256(SignParts(parts));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(r.error().message(),
            "image package: header.payload_size: 1099511627776 exceeds the limit of 1073741824 "
            "bytes");

  // A frame that does not say how big it is.
  parts = SampleParts();
  parts.payload = Zstd(SampleTree(), /*with_content_size=*/false);
  EXPECT_EQ(VerifyError(SignParts(parts)),
            "image package: payload zstd frame does not declare its uncompressed size");
}

TEST(ImagePackageTest, PayloadFrameErrors) {
  RawParts parts = SampleParts();
  parts.payload.insert(parts.payload.end(), {1, 2, 3, 4, 5});
  EXPECT_EQ(VerifyError(SignParts(parts)),
            "image package: 5 bytes of trailing data after the payload's zstd frame");

  parts = SampleParts();
  parts.payload.resize(parts.payload.size() - 3);
  EXPECT_TRUE(VerifyError(SignParts(parts))
                  .starts_with("image package: payload zstd frame is malformed or truncated ("));

  parts = SampleParts();
  parts.payload = {'n', 'o', 't', ' ', 'z', 's', 't', 'd'};
  EXPECT_EQ(VerifyError(SignParts(parts)), "image package: payload is not a zstd frame");

  // A well-formed frame whose contents are not a file tree: verification passes (the bytes
  // are what the signer signed), Files() refuses.
  std::string not_a_tree = "this is not a file tree at all";
  parts = SampleParts();
  parts.payload = Zstd(AsBytes(not_a_tree));
  Json h = *ParseJson(parts.header_json, "test");
  h["payload_size"] = not_a_tree.size();
  parts.header_json = DumpJson(h);
  auto package = SignParts(parts);
  auto verified = VerifyWithP256(package);
  ASSERT_TRUE(verified) << verified.error().message();
  auto files = verified->Files();
  ASSERT_FALSE(files);
  EXPECT_EQ(files.error().message(), "image package: file tree: bad magic (not a Moat file tree)");
}

TEST(ImagePackageTest, FilesAppliesTreeLimits) {
  auto package = BuildSample(P256Key());
  auto verified = VerifyWithP256(package);
  ASSERT_TRUE(verified);
  auto files = verified->Files(FileTreeLimits{.max_entries = 2});
  ASSERT_FALSE(files);
  EXPECT_EQ(files.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(files.error().message(), "image package: file tree: 4 entries exceed the limit of 2");
}

// ---- Build ----

TEST(ImagePackageTest, BuildRefusesBadInput) {
  auto files = SampleFiles();
  auto error_for = [&](std::function<void(ImagePackageHeader&)> edit,
                       std::string_view manifest = kManifest, int level = 3) {
    ImagePackageHeader h = SampleHeader();
    edit(h);
    auto r = BuildImagePackage(h, manifest, files, P256Key(), level);
    return r ? std::string("(no error)") : r.error().message();
  };
  EXPECT_EQ(error_for([](auto& h) { h.version = "1.2.3-beta"; }),
            "image package: header.version: '1.2.3-beta' is not a version (1 to 4 "
            "dot-separated decimal numbers without leading zeros, each at most 2147483647)");
  EXPECT_EQ(error_for([](auto& h) { h.component_id = Guid(); }),
            "image package: header.component_id: must not be the nil GUID");
  EXPECT_EQ(error_for([](auto& h) { h.name = "bad\nname"; }),
            "image package: header.name: contains control character 0x0a");
  EXPECT_EQ(error_for([](auto& h) { h.name = "\xff\xfe"; }),
            "image package: header.name: not valid UTF-8");
  EXPECT_EQ(error_for([](auto&) {}, kManifest, 100),
            fmt::format("image package: zstd level 100 is outside {}..{}", ZSTD_minCLevel(),
                        ZSTD_maxCLevel()));
  EXPECT_TRUE(
      error_for([](auto&) {}, "not json").starts_with("image package: manifest: invalid JSON"));

  files[0].mode = 04755;
  EXPECT_EQ(error_for([](auto&) {}),
            "image package: file tree: path 'bin/app': mode 04755 is not allowed (permission "
            "bits 0..0777 only; setuid, setgid and sticky are refused)");
}

TEST(ImagePackageTest, BuildIsDeterministic) {
  EXPECT_EQ(Locate(BuildSample(Ed25519Key())).signed_len,
            Locate(BuildSample(Ed25519Key())).signed_len);
  // Ed25519 signatures are deterministic, so the whole package is.
  EXPECT_EQ(BuildSample(Ed25519Key()), BuildSample(Ed25519Key()));
}

// ---- Inspect ----

TEST(ImagePackageTest, InspectShowsAValidPackageWithoutTrustingIt) {
  auto package = BuildSample(Ed25519Key());
  auto info = InspectUnverifiedImagePackage(package);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->header.name, "blink");
  EXPECT_EQ(info->header.version, "1.2.3");
  EXPECT_EQ(info->header.component_id.ToString(), kComponentId);
  EXPECT_EQ(info->manifest_json, kManifest);
  EXPECT_EQ(info->signature.algorithm, crypto::KeyType::kEd25519);
  EXPECT_EQ(info->signature.key_id, Ed25519Key().public_key().Fingerprint());
  EXPECT_EQ(info->payload_bytes, Locate(package).payload_len);
}

TEST(ImagePackageTest, InspectFailsCleanlyOnGarbage) {
  auto r = InspectUnverifiedImagePackage(AsBytes("hello"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "image package: 5 bytes is too short (a package ends with a 16-byte footer)");
  std::vector<uint8_t> garbage(4096);
  uint32_t x = 12345;
  for (auto& b : garbage) b = static_cast<uint8_t>((x = x * 1103515245 + 12345) >> 16);
  r = InspectUnverifiedImagePackage(garbage);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "image package: bad footer magic (not a Moat image package, or truncated)");
  // A well-formed trailer in front of garbage.
  std::vector<uint8_t> fake =
      Sign(std::vector<uint8_t>(garbage.begin(), garbage.begin() + 100), P256Key());
  r = InspectUnverifiedImagePackage(fake);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "image package: bad magic (not a Moat image package)");
}

}  // namespace
}  // namespace moat::formats
